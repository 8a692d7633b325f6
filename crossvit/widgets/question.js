// The front end of the course's choice questions (crossvit.exercises.questions.ask): the options, a Check button
// and the answer line, answered in the browser from the answer lines Python packed (one per option: right or
// not, and why), so a question works in a saved notebook page or on the course site with no kernel.

/** The answer line for option `choice` (null: none picked yet). */
export function answerFor(messages, choice) {
  return choice === null || choice === undefined ? "Pick an option first." : messages[choice];
}

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "cvq";
  // keys pressed on the options and the button are theirs, not the notebook's shortcuts
  root.setAttribute("data-lm-suppress-shortcuts", "true");
  root.addEventListener("keydown", (event) => {
    if (event.target.matches("input, button")) event.stopPropagation();
  });
  const heading = document.createElement("div");
  heading.className = "cvq-heading";
  heading.innerHTML = `<b>Question ${model.get("question_id")}</b>: choose one, then press Check.`;
  const list = document.createElement("div");
  list.className = "cvq-options";
  list.setAttribute("role", "radiogroup");
  const name = `cvq-${model.get("question_id")}-${Math.random().toString(36).slice(2)}`;
  const radios = model.get("options").map((text, k) => {
    const label = document.createElement("label");
    label.className = "cvq-option";
    const radio = document.createElement("input");
    radio.type = "radio";
    radio.name = name;
    radio.value = String(k);
    radio.addEventListener("change", () => { model.set("choice", k); model.save_changes(); });
    label.append(radio, document.createTextNode(` ${text}`));
    list.append(label);
    return radio;
  });
  const button = document.createElement("button");
  button.type = "button";
  button.className = "cvq-check";
  button.textContent = "Check";
  const answer = document.createElement("div");
  answer.className = "cvq-answer";
  answer.setAttribute("aria-live", "polite");
  const show = () => {
    const choice = model.get("choice");
    radios.forEach((r, k) => { r.checked = k === choice; });
    const text = model.get("answer");
    answer.textContent = text;
    answer.dataset.verdict = text.startsWith("\u2713") ? "right" : text.startsWith("\u2717") ? "wrong" : "";
  };
  button.addEventListener("click", () => {
    model.set("answer", answerFor(model.get("messages"), model.get("choice")));
    model.save_changes();
    show();
  });
  model.on("change:choice", show);
  model.on("change:answer", show);
  root.append(heading, list, button, answer);
  el.append(root);
  show();
  return () => { model.off("change:choice", show); model.off("change:answer", show); root.remove(); };
}

export default { render };
