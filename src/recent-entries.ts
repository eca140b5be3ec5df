/**
 * @module
 * What a process remembers, bounded: about the last `bound` entries set (the IP blocks' subjects,
 * the payments' owners at their daily cap). Two generations of half the bound each, the older
 * dropped whole when the newer fills, rather than the least recently set evicted one by one:
 * JavaScriptCore's Map leaves a hole for each entry deleted, and taking the oldest key walked every
 * hole before it, ~18 µs a new subject at 50,000 (a flood of new addresses paid it on every
 * request).
 */
// No null or undefined entry: `get` reads either as missing (probe 94d F2 kept a null).
export class RecentEntries<Entry extends NonNullable<unknown>> {
  private newer = new Map<string, Entry>();
  private older = new Map<string, Entry>();

  constructor(private readonly bound: number) {}

  get(key: string): Entry | undefined {
    return this.newer.get(key) ?? this.older.get(key);
  }

  set(key: string, entry: Entry): void {
    this.newer.set(key, entry);
    // Set again, a key moves to the newer generation; its older copy would only be shadowed.
    this.older.delete(key);
    if (this.newer.size >= this.bound / 2) {
      this.older = this.newer;
      this.newer = new Map();
    }
  }

  delete(key: string): void {
    this.newer.delete(key);
    this.older.delete(key);
  }
}
