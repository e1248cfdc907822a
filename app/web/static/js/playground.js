// Playground: score sentences (perplexity per token and per word, bits per byte, a per-token strip
// coloured by log p, <unk> marked, the answer's <unk> warnings) and generate continuations streamed
// word by word. Text goes through the model's tokenizer unless "pretokenized" is checked.
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
          pretokenized: document.getElementById("pretokenized").checked,
          score_eos: document.getElementById("score-eos").checked,
        },
      });
      const a = answer.aggregate;
      const warnings = answer.warnings || [];
      document.getElementById("aggregate").textContent =
        `corpus perplexity ${num(a.corpus_perplexity)} over ${a.num_tokens} tokens (${a.num_unk} <unk>), ` +
        `word perplexity ${num(a.word_perplexity)} over ${a.num_words} words, ${num(a.bits_per_byte, 3)} bits per byte; ` +
        `mean sentence perplexity ${num(a.mean_sentence_perplexity)} · ${answer.tokenizer} tokenizer` +
        (answer.pretokenized ? " (pretokenized)" : "");
      // The warnings about all the sentences together head the list; a sentence's sits with it.
      document.getElementById("warnings").replaceChildren(
        ...warnings.filter((w) => w.sentence === null).map((w) => el("li", { class: "warning", text: w.message })),
      );
      document.getElementById("scored").replaceChildren(
        ...answer.sentences.map((s, i) => {
          const own = warnings.filter((w) => w.sentence === i);
          return el(
            "div",
            { class: own.length ? "scored warned" : "scored", "data-index": i },
            el("div", { class: "ppl" }, el("strong", { text: num(s.perplexity) }), " perplexity",
              el("span", { class: "per-word" }, ` · word ppl ${num(s.word_perplexity)} · ${num(s.bits_per_byte, 3)} bits/byte`),
              s.num_unk ? el("span", { class: "muted" }, ` · ${s.num_unk} <unk> · ${num(s.perplexity_without_unk)} without`) : null),
            own.map((w) => el("div", { class: "warning", role: "alert", text: `⚠ ${w.message}` })),
            strip(s, answer.log_base === "10"),
          );
        }),
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
      pretokenized: document.getElementById("gen-pretokenized").checked,
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
