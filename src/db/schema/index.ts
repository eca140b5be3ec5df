export * from "./audit";
export * from "./auth";
export * from "./chat";
export * from "./ip-blocks";
export * from "./rate-limit";
export * from "./users";
export * from "./webhooks";
