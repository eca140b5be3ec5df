/**
 * Credentials in a query string, spelt the ways clients and proxies spell them (a bearer token
 * URL-encoded and form-encoded, a password, an opaque refresh token), and the values that must never
 * leave through a log line or an error report; `Basic` carries one too, as a header value.
 */
export const CREDENTIAL_QUERY =
  "a=Bearer%20QUERYBEARER777&b=Bearer+QUERYPLUS888&password=QUERYPASS999&refresh_token=RefreshTok3nOpaque";

export const BASIC_CREDENTIAL = "Basic QkFTSUNTRUNSRVQ1NTU=";

/** What CREDENTIAL_QUERY and BASIC_CREDENTIAL carry. */
export const CREDENTIAL_VALUES = [
  "QUERYBEARER777",
  "QUERYPLUS888",
  "QUERYPASS999",
  "RefreshTok3nOpaque",
  "QkFTSUNTRUNSRVQ1NTU",
] as const;
