// The "Try it" page's service worker (book/try_it.md; registered by try_it/page.mjs, by no other page).
//
// Why: onnxruntime-web runs the networks on several WebAssembly threads only in a cross-origin-isolated
// page (threads share memory through SharedArrayBuffer), and a page is isolated only when its document
// is served with the headers below. A static site (GitHub Pages, `python -m http.server`) cannot send
// headers of its own choosing, so this worker adds them to the responses it passes on.
//
// What: it sits at the site's root only because a service worker's scope cannot reach above the folder
// of its script, and the page (book/try_it.html) and its runtime (try_it/) sit in two folders. The page
// registers it twice, with the two narrowest scopes that cover them: "book/try_it" (the page itself)
// and "try_it/" (the runtime's worker scripts, which need the headers too: a worker's own COEP decides
// whether it may share the page's memory). No other page of the book is in either scope, so no other
// page is controlled by it.
//
// How: same-origin GET requests for a document or a worker script are fetched as they are and returned
// with the two headers added; every other request (models, scripts, styles, MathJax) is not touched and
// goes to the network as it would without a worker. Everything the page loads is same-origin, which
// COEP's require-corp allows without further headers. It caches nothing.

const ISOLATION_HEADERS = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
};
const NEEDS_HEADERS = new Set(["document", "worker", "sharedworker"]);

// a new version takes over at once: it only adds headers, so the old and new cannot disagree on content
self.addEventListener("install", () => self.skipWaiting());

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET" || !NEEDS_HEADERS.has(request.destination)) return;
  if (new URL(request.url).origin !== self.location.origin) return;
  // a request the worker may not re-issue (the developer tools' only-if-cached outside same-origin mode)
  if (request.cache === "only-if-cached" && request.mode !== "same-origin") return;
  event.respondWith(withIsolationHeaders(request));
});

async function withIsolationHeaders(request) {
  const response = await fetch(request);
  // a redirect seen by a navigation (opaque) or a network error is passed on as it came
  if (response.type === "opaqueredirect" || response.status === 0) return response;
  const headers = new Headers(response.headers);
  for (const [name, value] of Object.entries(ISOLATION_HEADERS)) headers.set(name, value);
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}
