/**
 * @module
 * What the chat holds about a user, as a privacy contributor: the conversations (with their
 * messages) and daily usage of the user and of every API key the user owns. A key's conversations
 * are its own while it works (the user does not see them in `/api/chat/conversations`), but they
 * were held on the user's behalf: they are in the user's export and go with the user's erasure.
 * Retention deletes messages older than CHAT_RETENTION_DAYS, in bounded batches.
 */
import type { PrivacyContributor } from "../privacy/contributor";
import type { ChatOwner } from "./contract";
import type { ChatService, FailingConversation } from "./service";

/** The user and the user's keys (the `key:<id>` actors the auth feature contributes). */
export function ownersOfUser(userId: string, actors: readonly string[]): ChatOwner[] {
  const owners: ChatOwner[] = [{ kind: "user", id: userId }];
  for (const actor of actors) {
    if (actor.startsWith("key:")) owners.push({ kind: "key", id: actor.slice(4) });
  }
  return owners;
}

/**
 * Messages looked at a part for ones of no conversation, and at most 4 MB of their text (ChatService
 * `deleteUnownedMessages`): each deleted page is zeroed (secure delete), ~80 µs an 8 KB message
 * here, so a part holds the write lock ~20 ms (probe 93e F3: 5,000 messages held it 140–570 ms;
 * 93g F4: 250 of 1 MB each, 1.6 s).
 */
const UNOWNED_WINDOW = 250;

/** Chat rows (messages, conversations) an erasure deletes in one transaction ahead of its own. */
export const CHAT_ROWS_AHEAD_PART = 1_000;

/** HMACs an erasure's part ahead of it spends at most finding conversations to give back. */
export const RECLAIM_PART_HMACS = 2_000;

/**
 * Deletes `owners`' chat rows a part at a time (CHAT_ROWS_AHEAD_PART) at each call, true once they
 * are gone. Bounded by the parts the rows there take now, twice over (turns still made meanwhile,
 * an owner's part ending early), and a few: a trigger written into the file that puts back each
 * row deleted had an erasure go on for ever, a part every 20 ms (probe 60c F7). `doing` names the
 * work in that error.
 */
function chatDeletedInParts(
  service: ChatService,
  owners: readonly ChatOwner[],
  doing: string,
): () => boolean {
  const partsAllowed = 2 * service.chatPartsOf(owners, CHAT_ROWS_AHEAD_PART) + owners.length + 2;
  let parts = 0;
  let next = 0;
  return () => {
    if (next >= owners.length) return true;
    if (parts++ >= partsAllowed) {
      throw new Error(
        `${doing} took ${partsAllowed} parts and the chat rows are not all gone: rows keep coming back (a trigger written into the database file?)`,
      );
    }
    next = service.eraseSomeChat(owners, next, CHAT_ROWS_AHEAD_PART);
    return next >= owners.length;
  };
}

export function chatContributor(service: ChatService): PrivacyContributor {
  // The conversations each erasure's parts ahead found failing their seal and gave to no owner,
  // for its transaction to try against the keys only it finds; dropped by the transaction.
  const failingOf = new Map<string, FailingConversation[]>();
  return {
    name: "chat",
    export: (userId, { actors }) => service.exportOf(ownersOfUser(userId, actors)),
    // A long history goes before the erasure's transaction, a part at a time (100,000 messages'
    // deletion held every request ~1 s in it; probe 41b F5); the transaction deletes what was
    // written since, and the usage.
    eraseAhead: (userId, { actors }) => {
      const owners = ownersOfUser(userId, actors);
      // First the conversations the file moved away from the owners, given back to them (probe
      // 72a F1); then the owners' rows, a part at a time.
      const failing: FailingConversation[] = [];
      failingOf.delete(userId);
      let reclaimFrom: string | null = null;
      let deleteChat: (() => boolean) | null = null;
      return () => {
        if (deleteChat === null) {
          const part = service.reclaimSealedTo(
            owners,
            reclaimFrom,
            CHAT_ROWS_AHEAD_PART,
            RECLAIM_PART_HMACS,
          );
          failing.push(...part.failing);
          reclaimFrom = part.next;
          if (reclaimFrom !== null) return false;
          if (failing.length > 0) failingOf.set(userId, failing);
          deleteChat = chatDeletedInParts(service, owners, "an erasure's parts ahead of it");
        }
        return deleteChat();
      };
    },
    erase: (userId, { actors }) => {
      const owners = ownersOfUser(userId, actors);
      const failing = failingOf.get(userId);
      failingOf.delete(userId);
      if (failing) service.reclaimFailing(owners, failing);
      service.erase(owners);
    },
    retain: (now) => service.retain(now),
    erasedRemains: (erased) => {
      const owners = service.erasedOwners(erased);
      const deleteChat = chatDeletedInParts(
        service,
        owners,
        "deleting the chat rows of erased principals",
      );
      let chatGone = false;
      // And messages put back without their conversation (probe 93c F3): whoever's they were.
      const unowned = service.holdsUnownedMessages();
      let unownedAfter: string | null = null;
      let unownedDone = !unowned;
      return {
        principals: owners.map((owner) => `${owner.kind}:${owner.id}`),
        unowned,
        step: () => {
          if (!unownedDone) {
            const part = service.deleteUnownedMessages(unownedAfter, UNOWNED_WINDOW);
            unownedAfter = part.next;
            unownedDone = part.next === null;
            return false;
          }
          if (!chatGone) {
            chatGone = deleteChat();
            return false;
          }
          // What is left: their usage rows, and any conversation written since.
          service.eraseInTransaction(owners);
          return true;
        },
      };
    },
  };
}
