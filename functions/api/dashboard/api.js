// The viewer's credentials and the signed calls to the workset monitor's API.
//
// Credentials come from the sign-in form, or from the address's fragment (`#access_key_id=...`), where
// `workset dashboard` puts them: a browser never sends the fragment to a server, and this page removes it from the
// address bar at once. They are kept in this tab's sessionStorage only (gone when the tab closes) and leave the page
// only as SigV4 signatures, computed with WebCrypto by aws4fetch.
//
// Every call goes to this page's own API, relative to the page: deployed the page is <api>/<stage>/dashboard and the
// API's routes are <api>/<stage>/..., locally /dashboard and /... . The signature covers the path the browser sends,
// which is the one API Gateway checks (with the stage) and the one the local stack checks (without).

import { AwsClient } from "./aws4fetch.esm.js";

const STORAGE_KEY = "workset-monitor.credentials";
const EXECUTE_API_HOST = /\.execute-api\.([a-z0-9-]+)\.amazonaws\.com$/;
const DEFAULT_REGION = "us-east-1";

/** The region to sign for: the execute-api host's, else us-east-1 (the local stack's). */
export function defaultRegion(hostname = location.hostname) {
  const match = EXECUTE_API_HOST.exec(hostname);
  return match ? match[1] : DEFAULT_REGION;
}

/** Credentials handed over in the address's fragment, which is then removed from the address bar; or null. */
export function takeCredentialsFromAddress() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (!fragment.has("access_key_id") && !fragment.has("secret_access_key")) {
    return null;
  }

  history.replaceState(null, "", location.pathname + location.search);
  return credentialsFrom({
    accessKeyId: fragment.get("access_key_id"),
    secretAccessKey: fragment.get("secret_access_key"),
    sessionToken: fragment.get("session_token"),
    region: fragment.get("region"),
    expires: fragment.get("expires"),
  });
}

/** Credentials checked and trimmed; an Error says what is missing. */
export function credentialsFrom({ accessKeyId, secretAccessKey, sessionToken, region, expires }) {
  const credentials = {
    accessKeyId: (accessKeyId || "").trim(),
    secretAccessKey: (secretAccessKey || "").trim(),
    sessionToken: (sessionToken || "").trim() || null,
    region: (region || "").trim() || defaultRegion(),
    expires: expires || null,
  };
  if (!credentials.accessKeyId || !credentials.secretAccessKey) {
    throw new Error("an access key id and its secret access key are both needed");
  }
  if (!/^[a-z0-9-]+$/.test(credentials.region)) {
    throw new Error(`not a region: ${credentials.region}`);
  }
  return credentials;
}

export function storedCredentials() {
  try {
    const stored = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
    return stored ? credentialsFrom(stored) : null;
  } catch {
    sessionStorage.removeItem(STORAGE_KEY);
    return null;
  }
}

export function storeCredentials(credentials) {
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(credentials));
}

export function forgetCredentials() {
  sessionStorage.removeItem(STORAGE_KEY);
}

/** Whether temporary credentials are past their expiry (credentials without one never are, as far as we know). */
export function expired(credentials, now = Date.now()) {
  return Boolean(credentials.expires) && Date.parse(credentials.expires) <= now;
}

/** A workset id as one path segment, as the API takes it; `next` is spelled `%6Eext`, since /worksets/next is a
 * route of its own. */
export function segment(id) {
  const encoded = encodeURIComponent(id).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return encoded === "next" ? "%6Eext" : encoded;
}

/** An answer of the API that is not a success: API Gateway's own (codes in capitals) or a function's. */
export class ApiError extends Error {
  constructor(status, code, message, requestId) {
    super(message);
    this.status = status;
    this.code = code;
    this.requestId = requestId;
  }

  /** API Gateway refused the credentials: unsigned, wrongly signed, unknown, expired, or not allowed. */
  get refusedCredentials() {
    return this.status === 403 && this.code === this.code.toUpperCase();
  }
}

export class Api {
  constructor(credentials, pageAddress = location.href) {
    this.root = new URL(".", pageAddress);
    this.client = new AwsClient({
      accessKeyId: credentials.accessKeyId,
      secretAccessKey: credentials.secretAccessKey,
      sessionToken: credentials.sessionToken || undefined,
      service: "execute-api",
      region: credentials.region,
      // NOTE: the page refreshes by itself; a failed call is shown and the next refresh is the retry.
      retries: 0,
    });
  }

  /** GET a route of the API (`worksets`, `queue/stats`, ...) with the query parameters that are set. */
  async get(route, query = {}) {
    const url = new URL(route, this.root);
    for (const [name, value] of Object.entries(query)) {
      if (value !== null && value !== undefined && value !== "") {
        url.searchParams.set(name, String(value));
      }
    }

    const response = await this.client.fetch(url.href, { method: "GET", cache: "no-store", credentials: "omit" });
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      const error = (body && body.error) || {};
      throw new ApiError(
        response.status,
        error.code || `HTTP_${response.status}`,
        error.message || response.statusText || "the API refused",
        error.request_id || response.headers.get("x-amzn-RequestId"),
      );
    }
    return body;
  }
}
