/**
 * @module
 * The rules a chat message must pass, wherever it comes from (`POST /api/chat`, a WhatsApp
 * message): trimmed, 1 to 4000 characters (code points), no control character but newline and
 * tab (no NUL, no CR, no C1 controls), well-formed Unicode, at least one visible character, no chat
 * template's control token. The failure names the rule, never the text. A message that fails is
 * refused whole, never altered.
 */

import { hasControlBesidesTabAndNewline, showsSomething } from "../../visible-text";

export const MAX_MESSAGE_CHARACTERS = 4000;

export type MessageCheck = { ok: true; message: string } | { ok: false; rule: string };

/**
 * The role markers of the chat templates open-weight models are served with: ChatML and every
 * `<|…|>` token (Qwen, Llama 3, Phi, gpt-oss's harmony), DeepSeek's `<｜…｜>`, Gemma's turns,
 * Mistral's `[INST]` family, EXAONE's `[|…|]`, MiniMax-M1's `<beginning_of_sentence>` and
 * TeleChat2's `<_user>` kin, Nemotron Nano 2's `<SPECIAL_N>`, openPangu's `[unusedN]`, Ling's
 * `<role>SYSTEM</role>`, Seed-Coder's and MiniCPM's, Reka's `<sep>`, Idefics3's `<end_of_utterance>`,
 * Baichuan's `<B_SYS>`, `<C_Q>` and `<H_A>`, InternLM's `<eoh>`,
 * and those probe 86e F1 found past the first list. vLLM, llama.cpp and
 * Hugging Face templates render the user's text into the prompt and tokenize these as the real
 * markers, so a user's message could close its own turn and open a `system` one (probe 86b F2).
 * `<s>` and `</s>` are left: they are HTML too.
 */
const TEMPLATE_TOKEN = new RegExp(
  [
    // ChatML, Llama 3, Phi (and Phi-4's closing `<|/tool|>`), harmony, GPT-2's <|endoftext|>: a
    // name of two characters or more.
    "<\\|/?[A-Za-z_][A-Za-z0-9_.:-]{1,63}\\|>",
    "<｜[^｜<>\\s]{1,64}｜>",
    "</?(?:start_of_turn|end_of_turn)>",
    // Mistral's role and tool markers; not `[IMG]` or `[ARGS]`, which are BBCode and every
    // command-line tool's usage line too, and open no turn (probe 87a F5).
    "\\[/?(?:INST|SYSTEM_PROMPT|AVAILABLE_TOOLS|TOOL_CALLS|TOOL_RESULTS|TOOL_CONTENT|THINK|CALL_ID)\\]",
    // EXAONE's `[|system|]`, `[|user|]`, `[|assistant|]`, `[|endofturn|]` (probe 87a F2).
    "\\[\\|[A-Za-z_][A-Za-z0-9_]{1,31}\\|\\]",
    // Llama 2's system block, MiniMax's role markers, Seed-OSS, Nemotron, Baichuan, InternLM2.
    "<</?SYS>>",
    "\\]~!?b\\[|\\]~b\\]|\\[e~\\[",
    // MiniMax-M1 and Text-01's sentence and document markers; TeleChat2's roles (probe 88a F5).
    "<(?:beginning_of_sentence|end_of_sentence|begin_of_document|end_of_document)>",
    "<_(?:user|bot|system|end|start|tool)>",
    // Nemotron Nano 2's `<SPECIAL_10>` kin, openPangu's `[unused9]`, Ling's roles, Seed-Coder's
    // sentence markers, MiniCPM's `<用户>` and `<AI>` (probe 88d F1).
    "<SPECIAL_\\d{1,4}>",
    "\\[unused\\d{1,4}\\]",
    // Ling's `<role>` and `</role>` are tokens of their own around any role's name (probe 88f
    // F1: `<role>TOOL</role>`, `<role> SYSTEM </role>` and lower case passed a list of names).
    "</?role>",
    "<\\[(?:begin|end)[▁_]of[▁_]sentence\\]>",
    "<用户>|<AI>",
    // Reka Flash 3's turn separator (`human: … <sep> assistant:`) and Idefics3's and SmolVLM's
    // end of a turn (`User: …<end_of_utterance>\nAssistant:`) (probe 89f F3).
    "<sep>|<end_of_utterance>",
    // Baichuan's roles (`<B_SYS>`, `<B_USYS>`, `<H_Q>`, `<H_A>`; `<C_Q>`, `<C_A>` in Baichuan-M1,
    // -Omni and -Audio, whose other markers end in `_baichuan`) and InternLM's first ends of a
    // turn, `<eoh>`, `<eoa>`, `<eosys>` (probe 90k F1).
    "</?B_(?:SYS|USYS|FUNC|CODE|APE)>|<[CH]_[QA]>|<[a-z_]{1,40}_baichuan>|<eo(?:h|a|sys)>",
    "<seed:[a-z_]{2,16}>",
    "<extra_id_\\d{1,3}>",
    "<reserved_\\d{1,4}>",
    "\\[UNUSED_TOKEN_\\d{1,4}\\]",
  ].join("|"),
  "u",
);

const TEMPLATE_TOKENS = new RegExp(TEMPLATE_TOKEN.source, "gu");

export function checkChatMessage(raw: string): MessageCheck {
  if (!raw.isWellFormed()) return { ok: false, rule: "Must be well-formed Unicode" };
  if (hasControlBesidesTabAndNewline(raw)) {
    return { ok: false, rule: "Must not contain control characters other than newline and tab" };
  }
  if (TEMPLATE_TOKEN.test(raw)) {
    return {
      ok: false,
      rule: "Must not contain a chat template's control tokens (such as <|im_start|>)",
    };
  }
  const message = raw.trim();
  if (message === "") return { ok: false, rule: "Must not be empty or only whitespace" };
  if (!showsSomething(message)) {
    return { ok: false, rule: "Must contain at least one visible character" };
  }
  // Counted in code points: an emoji is one character, as a person counts it.
  let length = 0;
  for (const _ of message) {
    if (++length > MAX_MESSAGE_CHARACTERS) {
      return {
        ok: false,
        rule: `Must be at most ${MAX_MESSAGE_CHARACTERS} characters after trimming`,
      };
    }
  }
  return { ok: true, message };
}

/**
 * `text` with every chat template's control token broken by a word joiner after its first
 * character: what a stored message goes upstream as in a later turn's history. A reply can hold
 * one (a model told to write it), and so can a message stored before the rule refused them; the
 * stored text stays as it was, and the model reads the same characters but no role marker.
 */
export function defuseTemplateTokens(text: string): string {
  // Again until none is left: one pass finds markers that do not overlap, and MiniMax's `]~b]~b]`
  // holds a second `]~b]` on the first one's last `]` (probe 90m F2). Each pass breaks at least
  // one marker for good, so it ends.
  let defused = text;
  for (let before = ""; before !== defused; ) {
    before = defused;
    defused = defused.replace(
      TEMPLATE_TOKENS,
      (token) => `${token.slice(0, 1)}\u2060${token.slice(1)}`,
    );
  }
  return defused;
}
