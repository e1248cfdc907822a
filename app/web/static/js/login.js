// Log in: POST the key to /v1/session, which sets the HttpOnly cookie, then go where we were going.
"use strict";

(() => {
  const form = document.getElementById("login-form");
  const next = new URLSearchParams(location.search).get("next");
  const target = next && next.startsWith("/") && !next.startsWith("//") ? next : "/";

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const field = form.querySelector('.field[data-field="key"]');
    const error = field.querySelector(".error");
    field.classList.remove("invalid");
    error.textContent = "";
    try {
      await Dash.api("/v1/session", { method: "POST", json: { key: document.getElementById("key").value }, allow401: true });
      location.assign(target);
    } catch (err) {
      field.classList.add("invalid");
      error.textContent = err.status === 404 ? "this server does not use API keys: nothing to log in to" : err.message;
    }
  });
})();
