/**
 * Replies longer than Graph takes in one message (4,096 characters): sent as consecutive parts,
 * each cut where a reader would pause, in order, each part once, across retries, permanent
 * refusals, stops and rows whose count of parts sent was written into the file (probe 59b F1: such
 * a reply was refused by Graph as a whole and given up unsent).
 */
import { describe, expect, test } from "bun:test";
import { applyMigrations } from "../../../src/db/migrate";
import type { ChatTurnOutcome } from "../../../src/modules/chat/contract";
import { EMPTY_CHAT_REPLY } from "../../../src/modules/webhooks/outbox";
import { createOutboxSeal, type SealedOutboxRow } from "../../../src/modules/webhooks/outbox-seal";
import { GRAPH_TEXT_LIMIT, replyParts } from "../../../src/modules/webhooks/reply-parts";
import { upgradeSealing } from "../../../src/upgrade-sealing";
import { send } from "../../support/app";
import { cleanupsAfterEach } from "../../support/cleanups";
import { putBackBefore } from "../../support/migrations";
import { drainInNextProcess, outboxSetup } from "../../support/outbox";
import {
  auditedEvents,
  deliver,
  notification,
  type ScriptedChat,
  storedId,
} from "../../support/whatsapp";

const cleanups = cleanupsAfterEach();

/** What a part holds apart from the white space a cut drops. */
const visible = (text: string) => text.replace(/\s+/gu, "");

function expectWellCut(reply: string, parts: string[], limit = GRAPH_TEXT_LIMIT): void {
  for (const part of parts) {
    expect(part.length).toBeGreaterThan(0);
    expect(part.length).toBeLessThanOrEqual(limit);
    expect(part.isWellFormed()).toBe(true);
  }
  expect(visible(parts.join(""))).toBe(visible(reply));
}

describe("cutting a reply into parts", () => {
  test("a reply that fits in one message is sent as it is, to the last character", () => {
    const fits = `  ${"a".repeat(GRAPH_TEXT_LIMIT - 4)}  `;
    expect(replyParts(fits)).toEqual([fits]);
    expect(replyParts("")).toEqual([""]);
  });

  test("a longer one is cut at a paragraph's end, else a line's, a sentence's, a space", () => {
    const paragraph = "Word ".repeat(500).trim(); // 2,499 characters
    expect(replyParts(`${paragraph}.\n\n${paragraph}.\n\n${paragraph}.`)).toEqual([
      `${paragraph}.`,
      `${paragraph}.`,
      `${paragraph}.`,
    ]);
    const line = `${"Lines ".repeat(300).trim()}`; // 1,799
    const lines = [line, line, line].join("\n");
    expect(replyParts(lines)).toEqual([`${line}\n${line}`, line]);
    const sentence = `${"Sentences are words. ".repeat(100).trim()}`; // 2,099
    const [first, ...rest] = replyParts(`${sentence} ${sentence}`);
    expect(first!.endsWith(".")).toBe(true);
    expect(rest).toHaveLength(1);
    const words = "unbroken ".repeat(1000).trim();
    const byWords = replyParts(words);
    expect(byWords.every((part) => /^unbroken( unbroken)*$/.test(part))).toBe(true);
    expectWellCut(words, byWords);
  });

  test("a break in the first half of the bound is passed over for a weaker one later: no short messages", () => {
    const reply = `Short intro.\n\n${"x ".repeat(3000)}`;
    const [first] = replyParts(reply);
    expect(first!.length).toBeGreaterThan(GRAPH_TEXT_LIMIT / 2);
  });

  test("text with no space is cut between characters as a reader sees them: no emoji, flag or accent split", () => {
    for (const unit of ["😀", "🇫🇷", "👩‍👩‍👧‍👦", "é", "e\u0301", "字", "a"]) {
      const reply = unit.repeat(Math.ceil((3 * GRAPH_TEXT_LIMIT) / unit.length) + 7);
      const parts = replyParts(reply);
      expectWellCut(reply, parts);
      expect(parts.join("")).toBe(reply);
      for (const part of parts) expect(part.length % unit.length).toBe(0);
    }
  });

  test("Chinese and Japanese text is cut after a full stop, which no space follows (probe 59c F3)", () => {
    for (const sentence of ["这是一个句子。", "これは文です。", "你好吗？", "太好了！"]) {
      const reply = sentence.repeat(Math.ceil(7000 / sentence.length));
      const parts = replyParts(reply);
      expect(parts.length).toBeGreaterThan(1);
      for (const part of parts) expect(part.startsWith(sentence)).toBe(true);
      expect(parts.join("")).toBe(reply);
    }
  });

  test("a sentence's closing brackets and quotes, and combining marks, stay with it: no part begins with one (probe 59d F4)", () => {
    for (const sentence of [
      "他说：「这是一个句子。」",
      "『これは文です。』",
      "（你好吗？）",
      "“太好了！”",
      "她说「好。」\u3099",
      'He said: "It works." ',
      "(It works.) ",
    ]) {
      const reply = sentence.repeat(Math.ceil(7000 / sentence.length));
      const parts = replyParts(reply);
      expect(parts.length).toBeGreaterThan(1);
      for (const part of parts) expect(part.startsWith(sentence.trimEnd())).toBe(true);
    }
  });

  test("no part begins with a closing quote or bracket or a combining mark, wherever the cut falls: French spacing before », a mark or ) after a space, a mark outside the BMP (probe 60a F-RP1)", () => {
    const mustNotBegin = /^[\p{Pe}\p{Pf}\p{M}]/u;
    const replies = [
      ...[" ", "\u00a0", "\u202f"].map((space) => `« Il a dit oui.${space}» `.repeat(600)),
      "word \u0301".repeat(2000),
      `(${"see this ".repeat(5)}done. ) `.repeat(200),
      "文です。\u{E0100}".repeat(2000),
      "他说「好。」\u{E0100} ".repeat(900),
    ];
    for (const reply of replies) {
      const parts = replyParts(reply);
      expect(parts.length).toBeGreaterThan(1);
      expectWellCut(reply, parts);
      expect(parts.filter((part) => mustNotBegin.test(part)).map((p) => p.slice(0, 3))).toEqual([]);
    }
  });

  test("text with no break at all is cut between characters where no closing bracket or quote begins the next part (probe 60c F8)", () => {
    const mustNotBegin = /^[\p{Pe}\p{Pf}\p{M}]/u;
    for (let offset = 0; offset < 4; offset++) {
      for (const run of ["他说好」", "字（字）", "字“字”"]) {
        const reply = "字".repeat(offset) + run.repeat(3000);
        const parts = replyParts(reply);
        expect(parts.length).toBeGreaterThan(1);
        expectWellCut(reply, parts);
        expect(parts.filter((part) => mustNotBegin.test(part)).map((p) => p.slice(0, 3))).toEqual(
          [],
        );
      }
    }
  });

  test("no part begins with what a line may not begin with in its script: French `! ? : ;` after a no-break space, Japanese and Chinese commas, small kana, the long-vowel mark (probe 61b F3)", () => {
    const mustNotBegin = /^[!?:;,.、，：；ぁぃぅぇぉっゃゅょァィゥェォッャュョー々ｰ､〜ๆ…—―]/u;
    const runs = [
      "Bonjour\u00a0! ",
      "Vraiment\u202f? ",
      "Note\u00a0: ",
      "Oui\u202f; ",
      "東京、",
      "ちょっと",
      "チョコレート",
      "字，字；",
      "ﾁｮｺﾚｰﾄ",
      "東京､",
      "10時〜",
      "ดี ๆ ",
      "他说……",
      "他说——",
      "word — ",
      "a ― b ",
    ];
    for (let offset = 0; offset < 6; offset++) {
      for (const run of runs) {
        const reply = "x".repeat(offset) + run.repeat(Math.ceil(9000 / run.length));
        const parts = replyParts(reply);
        expect(parts.length).toBeGreaterThan(1);
        expectWellCut(reply, parts);
        expect(parts.filter((part) => mustNotBegin.test(part)).map((p) => p.slice(0, 3))).toEqual(
          [],
        );
      }
    }
  });

  test("a paragraph or a line may begin with a full stop, a comma or French high punctuation: `.NET`, `...and then`, `!important` (probe 62b F3)", () => {
    const sentences = "A sentence of some length here. ".repeat(94).trim(); // 3,007 characters
    for (const next of [
      "...and then",
      "![chart](x.png)",
      ".NET runs",
      "./configure",
      ":)",
      "!important",
    ]) {
      const reply = `${sentences}\n\n${next} ${"more words follow here ".repeat(100)}`;
      expect(replyParts(reply)[0]).toBe(sentences);
    }
  });

  test("a cut at the bound itself never falls inside an emoji whose piece starts there: flags, skin tones, ZWJ sequences (probe 61b F1)", () => {
    const segmenter = new Intl.Segmenter(undefined, { granularity: "grapheme" });
    for (const reply of [
      `ab${"🇫🇷".repeat(2000)}`,
      `ab${"🇺🇸🇪🇸".repeat(1000)}`,
      `xx${"👍🏽".repeat(2000)}`,
      `${"x".repeat(4093)}👨‍👩‍👧 tail`,
    ]) {
      const parts = replyParts(reply);
      expectWellCut(reply, parts);
      const whole = [...segmenter.segment(reply)].map((s) => s.segment);
      const cut = parts.flatMap((part) => [...segmenter.segment(part)].map((s) => s.segment));
      expect(cut.filter((g) => g.trim() !== "")).toEqual(whole.filter((g) => g.trim() !== ""));
    }
  });

  test("runs of closing quotes, marks and brackets are cut like any text: every part within the bound, nothing lost (probe 60a F-RP2)", () => {
    for (const reply of ["'".repeat(70_000), "」".repeat(70_000), " '".repeat(35_000)]) {
      const parts = replyParts(reply);
      expectWellCut(reply, parts);
    }
    // Marks past the first part are on nothing: parts of them alone show nothing, and are not sent.
    const marks = replyParts(`a${"\u0301".repeat(70_000)}`);
    expect(marks).toEqual([`a${"\u0301".repeat(GRAPH_TEXT_LIMIT - 1)}`]);
  });

  test("a longer reply of white space alone is still one part, as a shorter one is sent as it is (probe 59c F1: it was none)", () => {
    for (const blank of [
      "\n".repeat(2500) + " ".repeat(2500),
      "\u00a0".repeat(5000),
      "\u3000".repeat(9000),
    ]) {
      const parts = replyParts(blank);
      expect(parts).toEqual([blank.slice(0, GRAPH_TEXT_LIMIT)]);
    }
  });

  test("every part is within the bound, well-formed and in order, whatever the text (random texts of many scripts)", () => {
    const pieces = ["a", "bc ", "\n", "\n\n", ". ", "😀", "🇫🇷", "e\u0301", "字", "\t", "!? ", "—"];
    let seed = 59;
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    for (let round = 0; round < 200; round++) {
      const limit = 16 + Math.floor(random() * 200);
      let reply = "";
      const length = Math.floor(random() * limit * 6);
      while (reply.length < length) reply += pieces[Math.floor(random() * pieces.length)];
      expectWellCut(reply, replyParts(reply, limit), limit);
    }
  });
});

/** A chat that answers the next turn with `reply`. */
function replying(chat: ScriptedChat, reply: string): void {
  const outcome: ChatTurnOutcome = {
    kind: "reply",
    turn: { conversationId: "conv-long", reply, usage: { promptTokens: 3, completionTokens: 4 } },
  };
  chat.script.push(outcome);
}

const LONG_REPLY = [
  "First paragraph. ".repeat(200).trim(),
  "Second paragraph. ".repeat(220).trim(),
  "Third paragraph. ".repeat(100).trim(),
].join("\n\n");

interface Row {
  state: string;
  attempts: number;
  recipient: string | null;
  reply: string | null;
  reply_parts_sent: number;
  reply_message_id: string | null;
  last_error: string | null;
}

const rowOf = (target: { db: { $client: import("bun:sqlite").Database } }) =>
  target.db.$client.query<Row, []>("SELECT * FROM whatsapp_outbox").get()!;

describe("sending a long reply", () => {
  test("a reply over 4,096 characters reaches the sender whole, as consecutive messages in order; one chat turn, one row sent", async () => {
    const { target, graph, chat, worker } = outboxSetup(cleanups);
    replying(chat, LONG_REPLY);
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.LONG1", from: "16505551234", text: "tell me" }] }),
    );
    expect(await worker.drain()).toBe(1);
    const parts = replyParts(LONG_REPLY);
    expect(parts).toHaveLength(3);
    expect(graph.received.map((r) => r.status)).toEqual([200, 200, 200]);
    expect(graph.sent.map((m) => m.body)).toEqual(parts);
    expect(graph.sent.every((m) => m.to === "16505551234")).toBe(true);
    expect(chat.turns).toHaveLength(1);
    expect(rowOf(target)).toMatchObject({
      state: "sent",
      attempts: 1,
      recipient: null,
      reply: LONG_REPLY,
      reply_parts_sent: 3,
      reply_message_id: storedId(target, graph.sent[2]!.id),
      last_error: null,
    });
    expect(await worker.drain()).toBe(0);
    expect(graph.sent).toHaveLength(3);
    const metrics = await (await send(target, "/metrics")).text();
    expect(metrics).toContain('whatsapp_replies_total{outcome="sent"} 1');
  });

  test.each([
    ["empty (probe 61b F2: Graph refused it for good, and the sender heard nothing)", ""],
    ["of zero-width and filler characters (probe 62b F1)", "\u200b\u2060\u3164\u115f\u00ad"],
    [
      "of controls, tags and bidi marks (probe 62b F1)",
      "\u0007\u001b\u{E0041}\u{E007F}\u200e\u202a",
    ],
    ["of zero-width spaces longer than a message (probe 62b F1)", " \u200b".repeat(3000)],
    [
      "white space alone, longer than a message (probe 59c F1)",
      "\n".repeat(2500) + " ".repeat(2500),
    ],
    ["white space alone, short", " \u00a0\u3000\n"],
  ])(
    "a chat reply %s: the sender is sent a fixed notice, the row finished, and the next message answered",
    async (_, blank) => {
      const { target, graph, chat, worker } = outboxSetup(cleanups);
      replying(chat, blank);
      await deliver(
        target,
        notification({
          messages: [{ id: "wamid.BLANK", from: "16505551234", text: "say nothing" }],
        }),
      );
      await deliver(
        target,
        notification({ messages: [{ id: "wamid.AFTER", from: "16505551234", text: "hello" }] }),
      );
      await worker.drain();
      expect(graph.sent.map((m) => m.body)).toEqual([EMPTY_CHAT_REPLY, "reply to: hello"]);
      expect(graph.received.filter((m) => m.status >= 400)).toEqual([]);
      expect(target.logs.text).toContain("the chat reply has nothing visible in it");
      const states = target.db.$client
        .query<{ state: string }, []>("SELECT state FROM whatsapp_outbox ORDER BY id")
        .all();
      expect(states.map((row) => row.state)).toEqual(["sent", "sent"]);
    },
  );

  test("a part Graph fails for a while is sent after the backoff, and the parts before it never twice", async () => {
    const { target, graph, chat, clock, worker } = outboxSetup(cleanups);
    replying(chat, LONG_REPLY);
    graph.failNext({ status: 200 }, { status: 503 });
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.LONG2", from: "16505551234", text: "tell me" }] }),
    );
    await worker.drain();
    const parts = replyParts(LONG_REPLY);
    expect(graph.sent.map((m) => m.body)).toEqual(parts.slice(0, 1));
    expect(rowOf(target)).toMatchObject({
      state: "pending",
      attempts: 1,
      reply_parts_sent: 1,
      recipient: "16505551234",
    });
    expect(rowOf(target).last_error).toStartWith("part 2 of 3: graph 503");
    clock.advance(1300);
    await worker.drain();
    expect(graph.received.map((r) => [r.status, parts.indexOf(r.body) + 1])).toEqual([
      [200, 1],
      [503, 2],
      [200, 2],
      [200, 3],
    ]);
    expect(graph.sent.map((m) => m.body)).toEqual(parts);
    expect(chat.turns).toHaveLength(1);
    expect(rowOf(target)).toMatchObject({ state: "sent", attempts: 2, reply_parts_sent: 3 });
  });

  test("a part Graph refuses for good gives the rest up at once, saying which part: failed, number cleared, audited", async () => {
    const { target, graph, chat, clock, worker } = outboxSetup(cleanups);
    replying(chat, LONG_REPLY);
    graph.failNext({ status: 200 }, { status: 200 }, { status: 400, code: 131026 });
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.LONG3", from: "16505551234", text: "tell me" }] }),
    );
    await worker.drain();
    clock.advance(60 * 60_000);
    await worker.drain();
    expect(graph.received.map((r) => r.status)).toEqual([200, 200, 400]);
    expect(rowOf(target)).toMatchObject({ state: "failed", recipient: null, reply_parts_sent: 2 });
    expect(rowOf(target).last_error).toStartWith("part 3 of 3: graph 400 code 131026");
    const [event] = auditedEvents(target, "whatsapp.reply_failed");
    expect(event.reason).toStartWith("part 3 of 3: graph 400 code 131026");
  });

  test("a stop between parts leaves the rest to the next process, which sends them without a chat turn or a part again", async () => {
    const { target, graph, chat, clock, worker } = outboxSetup(
      cleanups,
      {},
      { pollIntervalMs: 60_000 },
    );
    replying(chat, LONG_REPLY);
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.LONG4", from: "16505551234", text: "tell me" }] }),
    );
    graph.delayMs = 300;
    const draining = worker.drain();
    // The first part is in flight (Graph answers after 300 ms) when the stop begins.
    await Bun.sleep(100);
    await worker.stop();
    await draining;
    const parts = replyParts(LONG_REPLY);
    expect(graph.sent.map((m) => m.body)).toEqual(parts.slice(0, 1));
    expect(rowOf(target)).toMatchObject({ state: "pending", reply_parts_sent: 1 });
    graph.delayMs = 0;
    const nextChat = await drainInNextProcess(cleanups, { target, graph, clock });
    expect(nextChat.turns).toHaveLength(0);
    expect(chat.turns).toHaveLength(1);
    expect(graph.sent.map((m) => m.body)).toEqual(parts);
    expect(rowOf(target)).toMatchObject({ state: "sent", reply_parts_sent: 3 });
  });

  test("a count of parts sent the worker never writes (written into the file) sends the genuine reply from its first part", async () => {
    for (const written of ["99", "-1", "1.5", "'two'", "3"]) {
      const { target, graph, chat, clock, worker } = outboxSetup(cleanups);
      replying(chat, LONG_REPLY);
      graph.failNext({ status: 503 });
      await deliver(
        target,
        notification({ messages: [{ id: "wamid.LONG5", from: "16505551234", text: "tell me" }] }),
      );
      await worker.drain();
      expect(rowOf(target)).toMatchObject({ state: "pending", reply_parts_sent: 0 });
      target.db.$client.run(`UPDATE whatsapp_outbox SET reply_parts_sent = ${written}`);
      clock.advance(1300);
      await worker.drain();
      expect(graph.sent.map((m) => m.body)).toEqual(replyParts(LONG_REPLY));
      expect(rowOf(target)).toMatchObject({ state: "sent", reply_parts_sent: 3 });
    }
  });

  test("where the rest begins is recorded, and sealed, with each part; one written into the file is never sent (probes 62b F2, 63b F1)", async () => {
    const { target, graph, chat, clock, worker } = outboxSetup(cleanups);
    replying(chat, LONG_REPLY);
    graph.failNext({ status: 200 }, { status: 503 });
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.LONG6", from: "16505551234", text: "tell me" }] }),
    );
    await worker.drain();
    const parts = replyParts(LONG_REPLY);
    const offsetOf = () =>
      target.db.$client
        .query<{ at: number | null }, []>("SELECT reply_sent_chars AS at FROM whatsapp_outbox")
        .get()!.at;
    expect(rowOf(target)).toMatchObject({ state: "pending", reply_parts_sent: 1 });
    expect(offsetOf()).toBe(LONG_REPLY.indexOf(parts[1]!));
    // Moved in the file (a tail of the reply cut mid-sentence): the row fails its seal.
    target.db.$client.run("UPDATE whatsapp_outbox SET reply_sent_chars = reply_sent_chars + 600");
    clock.advance(1300);
    await worker.drain();
    expect(graph.sent.map((m) => m.body)).toEqual([parts[0]!]);
    expect(rowOf(target)).toMatchObject({ state: "failed", recipient: null });
    expect(auditedEvents(target, "whatsapp.outbox_tampered")).toHaveLength(1);
  });

  test("a count of parts sent changed in the file only numbers them; with no place recorded the reply goes from its first part", async () => {
    for (const [count, numbered] of [
      ["2", 4],
      ["99", 101],
      ["'x'", 3],
    ] as const) {
      const { target, graph, chat, clock, worker } = outboxSetup(cleanups);
      replying(chat, LONG_REPLY);
      graph.failNext({ status: 200 }, { status: 503 });
      await deliver(
        target,
        notification({ messages: [{ id: "wamid.LONG7", from: "16505551234", text: "tell me" }] }),
      );
      await worker.drain();
      target.db.$client.run(`UPDATE whatsapp_outbox SET reply_parts_sent = ${count}`);
      clock.advance(1300);
      await worker.drain();
      expect(graph.sent.map((m) => m.body)).toEqual(replyParts(LONG_REPLY));
      expect(rowOf(target)).toMatchObject({ state: "sent", reply_parts_sent: numbered });
    }
    // A count with no place (as no worker of this release writes it): from the first part.
    const { target, graph, chat, clock, worker } = outboxSetup(cleanups);
    replying(chat, LONG_REPLY);
    graph.failNext({ status: 503 });
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.LONG8", from: "16505551234", text: "tell me" }] }),
    );
    await worker.drain();
    target.db.$client.run("UPDATE whatsapp_outbox SET reply_parts_sent = 1");
    clock.advance(1300);
    await worker.drain();
    expect(graph.sent.map((m) => m.body)).toEqual(replyParts(LONG_REPLY));
  });

  test("a reply the release before left half sent (a count, no place) is given its place by the upgrade, sealed, and goes on from there (migration 0029)", async () => {
    const { target, graph, chat, clock, worker } = outboxSetup(cleanups);
    replying(chat, LONG_REPLY);
    graph.failNext({ status: 200 }, { status: 503 });
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.LONG9", from: "16505551234", text: "tell me" }] }),
    );
    await worker.drain();
    // As the release before left it: the count, the seal over no place.
    const sqlite = target.db.$client;
    const sealer = createOutboxSeal(target.config.audit.secretKey);
    const row = sqlite
      .query<SealedOutboxRow, []>(
        `SELECT message_id AS messageId, phone_number_id AS phoneNumberId, recipient,
           sender_hash AS senderHash, kind, body, reply FROM whatsapp_outbox`,
      )
      .get()!;
    putBackBefore(sqlite, 29);
    sqlite.run("UPDATE whatsapp_outbox SET seal = ?", [sealer.of(row)]);
    const sealing = upgradeSealing(target.config.audit.secretKey);
    applyMigrations(target.db, sealing.companions);
    expect(
      sealing.sealed().find((said) => said.event.type === "whatsapp.outbox_offsets_sealed"),
    ).toMatchObject({
      event: { detail: { replies: 1 } },
      message: expect.stringContaining("sealed where the rest begins of the 1 WhatsApp replies"),
    });
    clock.advance(1300);
    await worker.drain();
    expect(graph.sent.map((m) => m.body)).toEqual(replyParts(LONG_REPLY));
    expect(rowOf(target)).toMatchObject({ state: "sent", reply_parts_sent: 3 });
  });

  test("a second run of 0029 (the file put back before it, a count forged) gives half-sent replies up rather than seal a place from the count (probe 64 F1)", async () => {
    const { target, graph, chat, clock, worker } = outboxSetup(cleanups);
    replying(chat, LONG_REPLY);
    graph.failNext({ status: 503 });
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.LONG10", from: "16505551234", text: "tell me" }] }),
    );
    await worker.drain();
    target.services.audit.record({
      type: "whatsapp.outbox_offsets_sealed",
      outcome: "success",
      actor: "system",
      detail: { replies: 0 },
    });
    target.services.audit.flush();
    const sqlite = target.db.$client;
    putBackBefore(sqlite, 29);
    sqlite.run("UPDATE whatsapp_outbox SET reply_parts_sent = 2");
    const sealing = upgradeSealing(target.config.audit.secretKey);
    applyMigrations(target.db, sealing.companions);
    clock.advance(1300);
    await worker.drain();
    expect(graph.sent).toEqual([]);
    expect(rowOf(target)).toMatchObject({ state: "failed", recipient: null });
    expect(rowOf(target).last_error).toContain("migration 0029 ran a second time");
  });

  test("a run of characters that show nothing after the text is no part of its own (probe 62b F1b)", () => {
    expect(replyParts(`${"a".repeat(4095)} ${"\u200b".repeat(10)}`)).toEqual(["a".repeat(4095)]);
    const answer = `Here is your answer.${"\u200b".repeat(5000)}`;
    const parts = replyParts(answer);
    expect(parts).toHaveLength(1);
    expect(parts[0]).toStartWith("Here is your answer.");
    // Between two parts of text, a part of it alone goes too; the text is all there.
    const around = `${"word ".repeat(700)}${"\u2060".repeat(4200)} ${"more ".repeat(900)}`;
    const split = replyParts(around);
    expect(split.every((part) => /[a-z]/.test(part))).toBe(true);
    expect(split.join(" ").match(/word/g)).toHaveLength(700);
    expect(split.join(" ").match(/more/g)).toHaveLength(900);
  });
});
