// Translation for both UIs: zh_cn and en_us dictionaries, the language chosen from the stored
// choice, else navigator.language, and switchable at run time.
const STORAGE_KEY = "lark-oncall.lang";
export const LANGUAGES = { en_us: "English", zh_cn: "中文" };

/** Maps a BCP 47 tag (`zh-CN`, `en-US`, …) or a Lark locale (`zh_cn`) to one we have. */
export function pickLanguage(tag) {
  return String(tag || "").toLowerCase().startsWith("zh") ? "zh_cn" : "en_us";
}

function storedLanguage() {
  try {
    return localStorage.getItem(STORAGE_KEY);
  } catch {
    return null;
  }
}

/**
 * `dictionaries` is `{ en_us: {key: text}, zh_cn: {key: text} }`; texts may hold `{name}`
 * placeholders. A key missing in the chosen language falls back to en_us, then to the key.
 */
export function createI18n(dictionaries) {
  let lang = storedLanguage() || pickLanguage(navigator.language);
  if (!dictionaries[lang]) lang = "en_us";
  const listeners = new Set();
  const t = (key, vars = {}) => {
    const text = dictionaries[lang]?.[key] ?? dictionaries.en_us?.[key] ?? key;
    return text.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
  };
  const apply = () => {
    document.documentElement.lang = lang === "zh_cn" ? "zh-CN" : "en";
  };
  apply();
  return {
    t,
    get lang() {
      return lang;
    },
    setLang(next) {
      lang = dictionaries[next] ? next : "en_us";
      try {
        localStorage.setItem(STORAGE_KEY, lang);
      } catch {
        // Private mode: the choice lasts for this page only.
      }
      apply();
      listeners.forEach((fn) => fn(lang));
    },
    onChange(fn) {
      listeners.add(fn);
    },
    /** Dates and numbers in the chosen language. */
    date(value) {
      if (!value) return "—";
      return new Date(value).toLocaleString(lang === "zh_cn" ? "zh-CN" : "en-US", { dateStyle: "medium", timeStyle: "short" });
    },
    number(value) {
      return Number(value).toLocaleString(lang === "zh_cn" ? "zh-CN" : "en-US");
    },
  };
}
