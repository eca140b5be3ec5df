import { t } from "elysia";
import { JsonInteger } from "../../plugins/openapi/json-integer";
import { Nullable } from "../../plugins/openapi/types";
import { OWNER_REF_PATTERN } from "./budget";
import { MAX_MESSAGE_CHARACTERS } from "./message";

export const ChatBody = t.Object(
  {
    message: t.String({
      description: `1 to ${MAX_MESSAGE_CHARACTERS} characters after trimming; no control characters but newline and tab`,
    }),
    conversationId: t.Optional(
      t.String({
        description: "Continue this conversation (yours); a new one when absent. Any other: 404",
      }),
    ),
  },
  { additionalProperties: false },
);

export const TokenUsageView = t.Object({
  promptTokens: JsonInteger({ minimum: 0 }),
  completionTokens: JsonInteger({ minimum: 0 }),
});

export const ChatReply = t.Object({
  conversationId: t.String(),
  reply: t.String({ description: "Plain text (never HTML)" }),
  usage: TokenUsageView,
});

export const ConversationParams = t.Object({ id: t.String() });

export const ConversationQuery = t.Object({
  cursor: t.Optional(
    t.String({ maxLength: 200, description: "`nextCursor` of the previous page" }),
  ),
  limit: t.Optional(t.Integer({ minimum: 1, maximum: 100, description: "20 by default" })),
});

export const ConversationSummaryView = t.Object({
  id: t.String(),
  createdAt: t.String({ format: "date-time" }),
  updatedAt: t.String({ format: "date-time" }),
  messageCount: JsonInteger({
    minimum: 0,
    description: "How many messages the conversation holds (all of them, not a page's)",
  }),
});

export const ConversationPage = t.Object({
  conversations: t.Array(ConversationSummaryView),
  nextCursor: Nullable(t.String()),
});

export const StoredMessageView = t.Object({
  role: t.UnionEnum(["user", "assistant"]),
  content: t.String(),
  incomplete: t.Boolean({
    description:
      "The reply was cut short: the client went away, the upstream cut it, or its content filter ended it part-way",
  }),
  createdAt: t.String({ format: "date-time" }),
  usage: Nullable(TokenUsageView),
});

export const MessagePageQuery = t.Object({
  cursor: t.Optional(
    t.String({ maxLength: 200, description: "`nextCursor` of the previous page (older messages)" }),
  ),
  limit: t.Optional(t.Integer({ minimum: 1, maximum: 100, description: "50 by default" })),
});

export const ConversationView = t.Object({
  ...ConversationSummaryView.properties,
  messages: t.Array(StoredMessageView, {
    description: "The page's messages, oldest first: the newest of the conversation on page one",
  }),
  nextCursor: Nullable(t.String({ description: "Pages to older messages; null at the first" })),
});

/** The most rows one page of `GET /api/admin/usage` holds, and how many it holds by default. */
export const MAX_USAGE_PAGE = 500;
export const DEFAULT_USAGE_PAGE = 100;

export const UsageQuery = t.Object({
  day: t.Optional(
    t.String({
      pattern: "^\\d{4}-\\d{2}-\\d{2}$",
      description: "UTC day, YYYY-MM-DD; today by default",
    }),
  ),
  principal: t.Optional(
    t.String({
      pattern: OWNER_REF_PATTERN,
      description:
        "`user:<id>` or `key:<id>` (the id a UUID, lower case), or `whatsapp:<id>` (32 hex)",
    }),
  ),
  cursor: t.Optional(
    t.String({
      maxLength: 2048,
      pattern: "^[A-Za-z0-9_.-]+$",
      description: "The `nextCursor` of the page before (it holds that page's day)",
    }),
  ),
  limit: t.Optional(
    t.Integer({
      minimum: 1,
      maximum: MAX_USAGE_PAGE,
      description: `Rows per page; ${DEFAULT_USAGE_PAGE} by default`,
    }),
  ),
});

export const UsagePage = t.Object({
  day: t.String(),
  budget: JsonInteger({ minimum: 0, description: "CHAT_DAILY_TOKEN_BUDGET; 0: no budget" }),
  usage: t.Array(
    t.Object({
      principal: t.String(),
      day: t.String(),
      // Null: the file holds something other than a count there (written by something else).
      usedTokens: Nullable(JsonInteger()),
      reservedTokens: Nullable(JsonInteger({ description: "Estimates of turns in flight" })),
      requests: Nullable(JsonInteger()),
    }),
  ),
  nextCursor: Nullable(
    t.String({ description: "Pass as `cursor` for the next page; null on the last page" }),
  ),
});
