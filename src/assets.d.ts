/** Text imports (`with { type: "text" }`): Bun gives the file's contents, bundled or not. */
declare module "*.sql" {
  const text: string;
  export default text;
}
