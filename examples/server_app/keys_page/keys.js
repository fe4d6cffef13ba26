// The API-keys page: list, create (the key shown once) and revoke keys
// through the key-management routes. The credential (an admin key, or a
// MailKite session token) lives in this closure only: never in
// localStorage, sessionStorage or a cookie, so a reload forgets it.
// Every name a user typed is set with textContent, never as HTML.
"use strict";

(() => {
  const body = document.body;
  const prefix = body.dataset.prefix;
  const auth = body.dataset.auth; // bearer | x-api-key | basic | session
  const grants = body.dataset.grants ? body.dataset.grants.split(",") : [];
  const $ = (id) => document.getElementById(id);

  let credential = null;

  function headers(extra) {
    const h = Object.assign({ Accept: "application/json" }, extra || {});
    if (auth === "x-api-key") {
      h["X-Api-Key"] = credential;
    } else if (auth === "basic") {
      h.Authorization = "Basic " + btoa(credential);
    } else {
      h.Authorization = "Bearer " + credential;
    }
    return h;
  }

  function say(text) {
    $("message").textContent = text || "";
  }

  async function call(method, path, json) {
    const init = { method, headers: headers(json ? { "Content-Type": "application/json" } : {}), cache: "no-store", credentials: "omit" };
    if (json) init.body = JSON.stringify(json);
    const response = await fetch(prefix + path, init);
    let data = null;
    if (response.status !== 204) {
      data = await response.json().catch(() => null);
    }
    if (!response.ok) {
      const message = data && data.error ? data.error.message : "request failed";
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  function cell(row, text, code) {
    const td = document.createElement("td");
    if (code) {
      const c = document.createElement("code");
      c.textContent = text;
      td.appendChild(c);
    } else {
      td.textContent = text;
    }
    row.appendChild(td);
    return td;
  }

  function when(value) {
    return value ? new Date(value).toLocaleString() : "never";
  }

  function grantText(key) {
    const parts = [];
    if (key.bundle) parts.push(key.bundle);
    if (key.scopes && key.scopes.length) parts.push(key.scopes.join(", "));
    return parts.join(" + ") || "-";
  }

  async function refresh() {
    const keys = [];
    let after = null;
    do {
      const query = "?limit=100" + (after ? "&after=" + encodeURIComponent(after) : "");
      const page = await call("GET", "/api-keys" + query);
      keys.push(...page.data);
      after = page.next;
    } while (after);
    const rows = $("key-rows");
    rows.replaceChildren();
    for (const key of keys) {
      const row = document.createElement("tr");
      row.dataset.id = key.id;
      cell(row, key.name).className = "name";
      cell(row, grantText(key));
      cell(row, when(key.created_at));
      cell(row, when(key.last_used_at));
      cell(row, key.redacted, true);
      cell(row, key.public_key || "", Boolean(key.public_key));
      const actions = cell(row, "");
      const revoke = document.createElement("button");
      revoke.type = "button";
      revoke.className = "revoke";
      revoke.textContent = "Revoke";
      revoke.addEventListener("click", () => revokeKey(key));
      actions.appendChild(revoke);
      rows.appendChild(row);
    }
    $("empty").hidden = keys.length > 0;
  }

  async function revokeKey(key) {
    if (!window.confirm('Revoke the key "' + key.name + '"? Requests using it will fail at once.')) {
      return;
    }
    try {
      await call("DELETE", "/api-keys/" + encodeURIComponent(key.id));
      say("");
      await refresh();
    } catch (e) {
      say("Could not revoke: " + e.message);
    }
  }

  function reveal(secret) {
    $("reveal-key").textContent = secret;
    $("reveal").hidden = false;
  }

  function dismiss() {
    // Drop the only copy of the secret from the document.
    $("reveal-key").textContent = "";
    $("reveal").hidden = true;
  }

  async function create(event) {
    event.preventDefault();
    const request = { name: $("key-name").value };
    const grant = $("key-grant").value;
    if (grant.startsWith("bundle:")) request.bundle = grant.slice(7);
    if (grant.startsWith("scope:")) request.scopes = [grant.slice(6)];
    try {
      const created = await call("POST", "/api-keys", request);
      $("create-form").reset();
      reveal(created.key);
      say("");
      await refresh();
    } catch (e) {
      say("Could not create the key: " + e.message);
    }
  }

  async function signedIn(value) {
    credential = value;
    try {
      await refresh();
    } catch (e) {
      credential = null;
      say(e.status === 401 ? "That key was not accepted." : "Could not list keys: " + e.message);
      return;
    }
    say("");
    $("sign-in").hidden = true;
    $("keys").hidden = false;
    $("sign-out").hidden = false;
  }

  function signOut() {
    credential = null;
    dismiss();
    $("key-rows").replaceChildren();
    $("keys").hidden = true;
    $("sign-out").hidden = true;
    $("sign-in").hidden = false;
  }

  async function login(event) {
    event.preventDefault();
    const response = await fetch("/api/auth/login", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ email: $("email").value, password: $("password").value }),
      cache: "no-store",
      credentials: "omit",
    });
    $("password").value = "";
    const data = await response.json().catch(() => null);
    if (!response.ok || !data || !data.token) {
      say(data && data.error ? data.error.message : "Login failed.");
      return;
    }
    await signedIn(data.token);
  }

  function setup() {
    const select = $("key-grant");
    if (body.dataset.defaultGrant === "yes") {
      const none = document.createElement("option");
      none.value = "";
      none.textContent = "Profile default";
      select.appendChild(none);
    }
    for (const grant of grants) {
      const option = document.createElement("option");
      option.value = grant;
      option.textContent = grant.replace(":", ": ");
      select.appendChild(option);
    }
    if (auth === "session") {
      $("login-form").hidden = false;
      $("login-form").addEventListener("submit", login);
    } else {
      $("key-form").hidden = false;
      $("key-form").addEventListener("submit", (event) => {
        event.preventDefault();
        const input = $("admin-key");
        const value = input.value.trim();
        input.value = "";
        signedIn(value);
      });
    }
    $("create-form").addEventListener("submit", create);
    $("dismiss").addEventListener("click", dismiss);
    $("copy").addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText($("reveal-key").textContent);
        say("Copied.");
      } catch (e) {
        say("Copy failed: select the key and copy it by hand.");
      }
    });
    $("sign-out").addEventListener("click", signOut);
  }

  setup();
})();
