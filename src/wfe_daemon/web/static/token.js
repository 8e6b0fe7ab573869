// Asking for the API token. A daemon bound to an address other than loopback answers the
// API's reads only with its token; when one answers 401, the view gives way to a form that
// asks for it. The token is kept in this tab's sessionStorage (common.js), and the header's
// "Forget token" button drops it.

import { enter, forgetToken, h, reload, savedToken, saveToken, setTitle, setView } from "./common.js";

// Why `token` cannot be sent (a header carries no control character), or null.
function tokenProblem(token) {
  if (!token) return "Enter the token.";
  if (/[\u0000-\u001f\u007f]/.test(token)) return "A token cannot hold a control character.";
  return null;
}

// Shows the header's "Forget token" button while a token is kept.
export function showForget() {
  document.getElementById("forget-token").hidden = savedToken() === null;
}

// The form asking for the token, in place of the view; `wrong`: the last one was refused.
export function askToken(err, wrong) {
  showForget();
  const shown = document.getElementById("token-form");
  const problem = shown ? document.getElementById("token-error")
    : h("div", { class: "error-box", role: "alert", id: "token-error", hidden: true });
  if (wrong) {
    problem.replaceChildren(h("strong", {}, "The token was refused: "), err.message);
    problem.hidden = false;
  }
  if (shown) return; // several reads were refused at once
  enter(); // the refused view stops: its streams close and its late reads draw nothing
  setTitle("API token");
  const input = h("input", { type: "password", name: "token", id: "token-input", autocomplete: "off",
    spellcheck: "false" });
  const form = h("form", { class: "filters token-form", id: "token-form" },
    h("label", {}, h("span", {}, "API token"), input),
    h("button", { type: "submit" }, "Use token"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = input.value.trim();
    const bad = tokenProblem(token);
    if (bad) {
      problem.replaceChildren(bad);
      problem.hidden = false;
      return;
    }
    saveToken(token);
    showForget();
    reload();
  });
  setView(h("h1", {}, "API token"),
    h("p", { class: "note" }, "This daemon answers its API only with its token (it is bound to an ",
      "address other than loopback). The token is kept in this tab until it closes or you forget it."),
    problem, form);
  input.focus();
  document.body.dataset.ready = "token";
}

// The header's "Forget token" button: drops the token and draws the view again (which asks
// for a token when the daemon wants one).
export function watchForget() {
  document.getElementById("forget-token").addEventListener("click", () => {
    forgetToken();
    showForget();
    reload();
  });
  showForget();
}
