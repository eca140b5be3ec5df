/**
 * The unknown-email login's dummy argon2id hash is started when the service is built and does not
 * hold up the start (the first `/health` answers without it), but a login that arrives before it
 * exists waits for that same hash: it never answers sooner (which would tell an unknown address
 * from a known one by timing) and never hashes a second time. The entry (src/index.ts) builds the
 * services without it and starts it once listening; a login or /ready that comes first starts it.
 */
import { afterEach, expect, spyOn, test } from "bun:test";
import { buildTestApp, secondProcess, send, type TestApp } from "../support/app";
import { signUp } from "../support/auth";

/** The answer to a request, its name added to `answered` when it comes. */
function noted(answered: string[], name: string, response: Promise<Response>) {
  return response.then((answer) => {
    answered.push(name);
    return answer;
  });
}

const open: TestApp[] = [];
afterEach(() => {
  for (const target of open.splice(0)) target.close();
});

/** Every password hash from now on finishes only once `release` is called. */
function holdHashes() {
  const realHash = Bun.password.hash.bind(Bun.password);
  let release!: () => void;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  const hash = spyOn(Bun.password, "hash").mockImplementation(async (...args) => {
    await gate;
    return realHash(...args);
  });
  return { hash, release };
}

test("/health answers while the dummy hash is still being made; a login waits for that one hash", async () => {
  // The dummy hash (the only hash a start makes) finishes only when the test says so.
  const { hash, release } = holdHashes();
  const verify = spyOn(Bun.password, "verify");
  try {
    const target = buildTestApp();
    open.push(target);
    expect((await send(target, "/health")).status).toBe(200);
    expect(target.services.auth.loginPrepared).toBe(false);

    let answered = false;
    const login = send(target, "/api/auth/login", {
      body: { email: "nobody@example.com", password: "violet-Harbor-quantum-73!" },
    }).then((response) => {
      answered = true;
      return response;
    });
    await Bun.sleep(50);
    expect(answered).toBe(false);
    expect(verify).not.toHaveBeenCalled();

    release();
    const response = await login;
    expect(response.status).toBe(401);
    expect(((await response.json()) as { code: string }).code).toBe("UNAUTHENTICATED");
    expect(hash).toHaveBeenCalledTimes(1);
    expect(verify).toHaveBeenCalledTimes(1);
    expect(target.services.auth.loginPrepared).toBe(true);
  } finally {
    release();
    hash.mockRestore();
    verify.mockRestore();
  }
});

test("a known email's login and /ready wait for the dummy hash too: no answer tells the two apart", async () => {
  const first = buildTestApp();
  open.push(first);
  const { email } = await signUp(first);
  await first.services.auth.prepared();

  const { hash, release } = holdHashes();
  // A restart on the same database: its dummy hash is being made.
  const restarted = secondProcess(first);
  try {
    const answered: string[] = [];
    const known = noted(
      answered,
      "known",
      send(restarted, "/api/auth/login", { body: { email, password: "wrong-Harbor-quantum-73!" } }),
    );
    const ready = noted(answered, "ready", send(restarted, "/ready"));
    await Bun.sleep(50);
    expect(answered).toEqual([]);

    release();
    expect((await known).status).toBe(401);
    expect((await ready).status).toBe(200);
    expect(restarted.services.auth.loginPrepared).toBe(true);
  } finally {
    release();
    hash.mockRestore();
    restarted.close();
  }
});

test("built as the entry builds them (the hash started only once listening), a first login or /ready starts that one hash and waits for it", async () => {
  const { hash, release } = holdHashes();
  const verify = spyOn(Bun.password, "verify");
  try {
    const target = buildTestApp({ prepareLogin: false });
    open.push(target);
    expect((await send(target, "/health")).status).toBe(200);
    expect(hash).not.toHaveBeenCalled();

    const answered: string[] = [];
    const login = noted(
      answered,
      "login",
      send(target, "/api/auth/login", {
        body: { email: "nobody@example.com", password: "violet-Harbor-quantum-73!" },
      }),
    );
    const ready = noted(answered, "ready", send(target, "/ready"));
    await Bun.sleep(50);
    expect(answered).toEqual([]);
    expect(hash).toHaveBeenCalledTimes(1);

    release();
    const response = await login;
    expect(response.status).toBe(401);
    expect(((await response.json()) as { code: string }).code).toBe("UNAUTHENTICATED");
    expect((await ready).status).toBe(200);
    expect(hash).toHaveBeenCalledTimes(1);
    expect(verify).toHaveBeenCalledTimes(1);
    expect(target.services.auth.loginPrepared).toBe(true);
  } finally {
    release();
    hash.mockRestore();
    verify.mockRestore();
  }
});
