// Every credential the suite accepts is a bearer credential: a session token from
// UserService.Login, or an API key of a service principal. Both travel as
// `authorization: Bearer <credential>`, so one interceptor serves both.
import type { Interceptor } from "@connectrpc/connect";

/**
 * A session token or API key, or a function giving the current one (called before every
 * call: a long-running worker can swap a key or log in again without a new client).
 * An empty string sends no header (anonymous calls such as Login).
 */
export type Credential = string | (() => string | Promise<string>);

/** Adds `authorization: Bearer <credential>` to every call, unless the call set its own. */
export function bearerAuth(credential: Credential): Interceptor {
  return (next) => async (request) => {
    if (!request.header.has("authorization")) {
      const value = typeof credential === "function" ? await credential() : credential;
      if (value) {
        request.header.set("authorization", `Bearer ${value}`);
      }
    }
    return next(request);
  };
}
