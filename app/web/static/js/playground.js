// Playground: score sentences (perplexity and a per-token strip coloured by log p, <unk> marked) and
// generate continuations streamed word by word.
"use strict";

(() => {
  const { api, el, num, flash } = Dash;
  const modelSelect = document.getElementById("model");
  const wanted = new URLSearchParams(location.search).get("model");

  const loadModels = () => Dash.modelOptions(modelSelect, wanted);

  // Colour a log-probability: natural log, 0 (certain) green to -12 (very unlikely) red.
  function colour(logprob, base10) {
    const ln = base10 ? logprob * Math.LN10 : logprob;
    const t = Math.min(1, Math.max(0, 1 + ln / 12));
    return `hsl(${Math.round(t * 120)}, 70%, 80%)`;
  }

  function strip(sentence, base10) {
    return el(
      "div",
      { class: "strip" },
      sentence.tokens.map((token, i) =>
        el("span", {
          class: sentence.is_unk[i] ? "tok unk" : "tok",
          style: `background: ${colour(sentence.logprobs[i], base10)}`,
          title: `${token}: log p = ${sentence.logprobs[i].toFixed(3)}${sentence.is_unk[i] ? " (out of vocabulary: scored as <unk>)" : ""}`,
          text: token,
        }),
      ),
    );
  }

  document.getElementById("score-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = document.getElementById("score-error");
    error.textContent = "";
    const sentences = document.getElementById("sentences").value.split("\n").map((s) => s.trim()).filter(Boolean);
    if (!sentences.length) {
      error.textContent = "type a sentence";
      return;
    }
    try {
      const answer = await api("/v1/score", {
        method: "POST",
        json: {
          model: modelSelect.value,
          sentences,
          normalize: document.getElementById("normalize").checked,
          score_eos: document.getElementById("score-eos").checked,
        },
      });
      const a = answer.aggregate;
      document.getElementById("aggregate").textContent =
        `corpus perplexity ${num(a.corpus_perplexity)} over ${a.num_tokens} tokens (${a.num_unk} <unk>); ` +
        `mean sentence perplexity ${num(a.mean_sentence_perplexity)}`;
      document.getElementById("scored").replaceChildren(
        ...answer.sentences.map((s) =>
          el(
            "div",
            { class: "scored" },
            el("div", { class: "ppl" }, el("strong", { text: num(s.perplexity) }), " perplexity",
              s.num_unk ? el("span", { class: "muted" }, ` · ${s.num_unk} <unk> · ${num(s.perplexity_without_unk)} without`) : null),
            strip(s, answer.log_base === "10"),
          ),
        ),
      );
    } catch (err) {
      error.textContent = err.message;
    }
  });

  let running = null;

  function value(id, parse) {
    const raw = document.getElementById(id).value.trim();
    return raw === "" ? undefined : parse(raw);
  }

  document.getElementById("generate-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = document.getElementById("generate-error");
    error.textContent = "";
    if (running) running.abort();
    running = new AbortController();
    const outputs = document.getElementById("outputs");
    const n = value("n", Number) || 1;
    const boxes = Array.from({ length: n }, (_, i) => el("pre", { class: "generated", "data-index": i, "data-chunks": "0" }));
    outputs.replaceChildren(...boxes);
    const prompt = document.getElementById("prompt").value;
    boxes.forEach((box) => box.append(el("span", { class: "prompt", text: prompt })));
    const body = {
      model: modelSelect.value,
      prompt,
      stream: true,
      max_tokens: value("max_tokens", Number),
      temperature: value("temperature", Number),
      top_k: value("top_k", Number),
      top_p: value("top_p", Number),
      seed: value("seed", Number),
      n,
    };
    const stop = document.getElementById("stop");
    stop.classList.remove("hidden");
    try {
      await Dash.postEvents("/v1/generate", body, (chunk) => {
        if (chunk.error) throw new Error(chunk.error.message);
        for (const choice of chunk.choices || []) {
          const box = boxes[choice.index];
          if (!box) continue;
          if (choice.text) box.append(document.createTextNode(prompt && box.childNodes.length === 1 && !choice.text.startsWith(" ") ? ` ${choice.text}` : choice.text));
          if (choice.finish_reason) box.append(el("span", { class: "finish", text: ` [${choice.finish_reason}]` }));
          box.dataset.chunks = String(Number(box.dataset.chunks) + 1);
        }
      }, running.signal);
    } catch (err) {
      if (err.name !== "AbortError") error.textContent = err.message;
    } finally {
      stop.classList.add("hidden");
      running = null;
    }
  });

  document.getElementById("stop").addEventListener("click", () => running && running.abort());

  Dash.ready.then(loadModels).catch((err) => flash(`could not load the models: ${err.message}`));
})();
