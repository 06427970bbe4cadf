"""The JavaScript a MiniWoB++ page runs for the env (reset, observe, act), as Playwright
evaluate() bodies. They use the task page's own globals (core, WOB_*), see miniwob's core.js."""

# Observations come back as one JSON string (json.loads on the Python side): Playwright's own
# value serialization walks the element list object by object in the driver and in Python, which
# cost ~1.5 ms of CPU per observation more (measured, click-button).

# Status, and when the episode still runs, the flattened core.getDOMInfo() tree (which also
# stores each element's ref on it and fills core.previousDOMInfo[ref] -> element).
_OBSERVE_FN = """() => {
  const status = {task: core.getUtterance(), done: WOB_DONE_GLOBAL, rawReward: WOB_RAW_REWARD_GLOBAL,
                  reason: WOB_REWARD_REASON === undefined ? null : WOB_REWARD_REASON, elements: null};
  if (WOB_DONE_GLOBAL) return status;
  const out = [];
  const walk = (n, hidden, owned) => {
    const el = n.ref > 0 ? core.previousDOMInfo[n.ref] : null;
    let name = '', cursor = '', skip = false, owner = false;
    if (el) {
      const s = getComputedStyle(el);
      hidden = hidden || s.visibility !== 'visible';
      cursor = s.cursor;
      const label = el.labels && el.labels.length ? el.labels[0].innerText : '';
      name = el.getAttribute('aria-label') || label || el.getAttribute('title') ||
             el.getAttribute('placeholder') || '';
      if (['A', 'BUTTON', 'LABEL'].includes(el.tagName) && !n.text) {
        // Mixed content: the element is named by its text, which is not listed again below it.
        name = name || el.innerText;
        owner = !!name;
      }
      skip = el.tagName === 'LABEL' && !!el.control;  // its control carries the label's text
      if (el.tagName === 'SELECT' && el.selectedIndex >= 0) n.value = el.options[el.selectedIndex].text;
    }
    out.push({ref: n.ref, tag: n.tag, text: n.text || '', name: name, cursor: cursor,
              hidden: hidden, skip: skip, owned: owned, value: n.value === undefined ? null : n.value,
              box: [n.left, n.top, n.width, n.height]});
    n.children.forEach(c => walk(c, hidden, owned || owner || skip));
  };
  walk(core.getDOMInfo(), false, false);
  status.elements = out;
  return status;
}"""

OBSERVE_JS = f"() => JSON.stringify(({_OBSERVE_FN})())"

# A reset and the first observation in one round trip (each evaluate costs ~1 ms of renderer
# CPU and as much again in the driver and the browser process); null when the task is not
# ready yet (the caller waits for WOB_TASK_READY, then observes). Ending an unfinished episode
# first bumps WOB_EPISODE_ID, so refs cached on elements that survive into the next episode are
# renumbered instead of colliding with fresh ones.
RESET_OBSERVE_JS = f"""([seed, maxTimeMs]) => {{
  core.endEpisode(0);
  core.EPISODE_MAX_TIME = maxTimeMs;
  Math.seedrandom(seed);
  core.startEpisodeReal();
  return WOB_TASK_READY ? JSON.stringify(({_OBSERVE_FN})()) : null;
}}"""

CENTER_JS = """ref => {
  const el = core.previousDOMInfo[ref];
  if (!el) return null;
  el.scrollIntoView({block: 'center', inline: 'center'});
  const r = el.getBoundingClientRect();
  return [r.left + r.width / 2, r.top + r.height / 2];
}"""

SELECT_ALL_JS = "ref => { const el = core.previousDOMInfo[ref]; if (el && el.select) el.select(); }"

SELECT_OPTION_JS = """([ref, label]) => {
  const el = core.previousDOMInfo[ref];
  const opt = Array.from(el.options).find(o => o.text.trim() === label || o.value === label);
  if (!opt) return false;
  el.value = opt.value;
  el.dispatchEvent(new Event('input', {bubbles: true}));
  el.dispatchEvent(new Event('change', {bubbles: true}));
  return true;
}"""
