/**
 * @module
 * What a process remembers of the subjects it asked the file about, bounded: the last `bound` or
 * so. Two generations of half the bound each, the older dropped whole when the newer fills, rather
 * than the least recently read evicted one by one: JavaScriptCore's Map leaves a hole for each
 * entry deleted, and taking the oldest key walked every hole before it, ~18 µs a new subject at
 * 50,000 (a flood of new addresses paid it on every request).
 */
export class RecentSubjects<Entry> {
  private newer = new Map<string, Entry>();
  private older = new Map<string, Entry>();

  constructor(private readonly bound: number) {}

  get(subject: string): Entry | undefined {
    return this.newer.get(subject) ?? this.older.get(subject);
  }

  set(subject: string, entry: Entry): void {
    this.newer.set(subject, entry);
    // Read again, a subject moves to the newer generation; its older copy would only be shadowed.
    this.older.delete(subject);
    if (this.newer.size >= this.bound / 2) {
      this.older = this.newer;
      this.newer = new Map();
    }
  }

  delete(subject: string): void {
    this.newer.delete(subject);
    this.older.delete(subject);
  }
}
