// A fetch wrapper for the client scripts (client.mjs, federated_client.mjs)
// that remembers the status of every DELETE (session termination), so a
// script can check its session was closed.

export const deletes = [];

export async function recordingFetch(input, init) {
  const res = await fetch(input, init);
  if ((init?.method || "GET").toUpperCase() === "DELETE") {
    deletes.push({ status: res.status, sessionId: new Headers(init?.headers).get("mcp-session-id") });
  }
  return res;
}
