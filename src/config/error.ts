/** A configuration that must not start: names the variable and why, in one line. */
export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    readonly reason: string,
  ) {
    super(`${variable} ${reason}`);
    this.name = "ConfigError";
  }
}
