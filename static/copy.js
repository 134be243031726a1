// Copy buttons, wherever they are and whenever they were made: a button with
// data-copy-from="<id>" copies that element's text. What happened is said in the nearest
// .copy-status of its part of the page (data-copy-status="<id>" names another); a button's
// data-copy-what names what it copies in that sentence ("The TXT record's value").

const $ = (id) => document.getElementById(id);

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  // Not a secure context (plain http on a LAN): the older way, through a selection.
  const scratch = document.createElement("textarea");
  scratch.value = text;
  scratch.setAttribute("readonly", "");
  scratch.style.position = "fixed";
  scratch.style.opacity = "0";
  document.body.append(scratch);
  scratch.select();
  const copied = document.execCommand("copy");
  scratch.remove();
  if (!copied) throw new Error("copy refused");
}

function statusFor(button) {
  if (button.dataset.copyStatus) return $(button.dataset.copyStatus);
  for (let part = button.parentElement; part; part = part.parentElement) {
    const status = part.querySelector(".copy-status");
    if (status) return status;
  }
  return null;
}

export function installCopyButtons() {
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-copy-from]");
    if (!button) return;
    const text = $(button.dataset.copyFrom).textContent;
    const status = statusFor(button);
    const label = button.dataset.label || (button.dataset.label = button.textContent);
    try {
      await copyText(text);
      button.textContent = "Copied";
      status.textContent = `${button.dataset.copyWhat || text} is on your clipboard.`;
    } catch {
      status.textContent = "Your browser did not allow copying; select the text and copy it yourself.";
    }
    setTimeout(() => { button.textContent = label; }, 2000);
  });
}
