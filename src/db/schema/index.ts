export * from "./audit";
export * from "./auth";
export * from "./ip-blocks";
export * from "./payments";
export * from "./rate-limit";
export * from "./users";
export * from "./webhooks";
export * from "./whatsapp";
