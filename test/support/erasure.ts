/**
 * An erasure watched while it runs: `DELETE /api/me` asked, and until it answers, `/health` asked
 * again and again (each must be answered 200 while the erasure is under way) with `look` called
 * after each answer, to see what the erasure has done so far.
 */
import { expect } from "bun:test";
import { send, type TestApp } from "./app";

export async function eraseWatching(
  target: TestApp,
  credential: Record<string, string>,
  look: () => void,
): Promise<Response> {
  let answered = false;
  const erasure = send(target, "/api/me", { method: "DELETE", headers: credential }).finally(() => {
    answered = true;
  });
  while (!answered) {
    expect((await send(target, "/health")).status).toBe(200);
    look();
  }
  return erasure;
}
