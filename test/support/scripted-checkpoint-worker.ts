/**
 * A stand-in for db/checkpoint-worker whose checkpoints fail once and then work again, as on a
 * disk that filled and was given room: what the service logs of it is under test, not SQLite.
 */
import type { FromCheckpointWorker, ToCheckpointWorker } from "../../src/db/checkpoint-worker";

declare const self: Worker;
const post = (message: FromCheckpointWorker) => self.postMessage(message);

self.onmessage = (event: MessageEvent<ToCheckpointWorker>) => {
  if (event.data.type === "start") {
    post({ type: "started" });
    post({ type: "failing", message: "database or disk is full" });
    post({ type: "recovered" });
  } else post({ type: "stopped" });
};
