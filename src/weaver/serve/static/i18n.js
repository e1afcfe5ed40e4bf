// Weaver studio: the interface in English and Chinese. Elements name their label with data-i18n (text),
// data-i18n-aria (aria-label), data-i18n-ph (placeholder) or data-i18n-title; W.t(key, ...args) fills {0}, {1}.
"use strict";

window.W = window.W || {};

W.STRINGS = {
  en: {
    title: "Weaver — writer's studio", tagline: "Drafts side by side, the newsroom, ad copy and support; every choice kept.",
    lang_switch: "中文", lang_switch_aria: "Switch the interface to Chinese", api_key: "API key",
    api_key_ph: "only if the server asks", views: "Views", tab_write: "Write", tab_newsroom: "Newsroom",
    tab_adcopy: "Ad copy", tab_support: "Support", tab_history: "History",
    model: "Model", task: "Task", drafts_n: "Drafts", temperature: "Temperature", max_tokens: "Max tokens",
    max_tokens_ph: "task default", blind: "Blind compare (tuned vs base)", write: "Write", stop: "Stop",
    drafts: "drafts", draft: "Draft {0}", writing: "writing…", done: "done", done_length: "done (length limit)",
    copied: "copied", saved: "saved", chosen: "chosen", rejected: "thumbs down",
    choose: "Choose", choose_aria: "Choose draft {0}", copy: "Copy", copy_aria: "Copy draft {0}",
    sources: "Sources", sources_aria: "Show which input sentences support each sentence of draft {0}",
    explain_hint: "Point at a sentence (or tab to it) to see the input sentences that support it.",
    unsupported: "nothing in the input supports this sentence", invented: "not in the input: {0}",
    regen: "Regenerate", regen_aria: "Regenerate draft {0}", down: "Thumbs down", down_aria: "Thumbs down on draft {0}",
    edit_aria: "Draft {0}, editable", written_by: "written by {0}", base: "base",
    status_writing: "Writing {0} draft(s)…", status_done: "Done. Choose the best draft, edit it in place, or copy it.",
    status_stopped: "Stopped.", status_blind: "Blind compare: drafts of {0} and {1} are mixed; choose one to see which wrote it.",
    no_base: "Blind compare needs a tuned model: pick an adapter (the base is served beside it).",
    recording_off: "This server keeps no history (--studio-db none).", key_hint: " — enter the server's API key above.",
    news_paste: "Articles (separate articles with a line holding only ---)", news_files: "Or upload files (.txt, .md, .jsonl)",
    news_n: "Alternative headlines", lang: "Language", news_run: "Process articles", news_summary: "Summary",
    news_headline: "Headline", news_pick: "Pick the headline", news_download: "Download the digest",
    news_none: "Paste or upload at least one article.", news_progress: "{0} of {1} articles done",
    news_failed: "Not processed: {0}", news_md: "Markdown", news_html: "HTML", news_jsonl: "JSONL",
    ad_product: "Product", ad_audience: "Audience", ad_tone: "Tone", ad_keywords: "Keywords (comma separated)",
    ad_attributes: "Or an attribute string (AdvertiseGen)", ad_attributes_ph: "类型#上衣*颜色#白色",
    ad_n: "Candidates", ad_run: "Write ad copy", ad_rank: "#{0}", ad_score: "score {0}",
    ad_parts: "keywords {0} · length {1}", ad_parts_ll: "likelihood {0} · keywords {1} · length {2}",
    sup_question: "Customer's message", sup_run: "Draft a reply", sup_reply: "Reply (edit before sending)",
    sup_citations: "Sources", sup_none: "no passage cited", sup_handed: "Handed over to a human colleague",
    sup_review: "Check this reply before sending: it is not well supported by the knowledge base.",
    sup_send: "Send", sup_sent: "Sent: the final text is kept.", sup_passage: "Passage {0}", close: "Close",
    hist_empty: "Nothing kept yet.", hist_open: "Open", hist_open_aria: "Open {0}", hist_refresh: "Refresh",
    hist_articles: "{0} articles", hist_drafts: "{0} drafts", hist_final: "Final: {0}",
    view_write: "Write", view_newsroom: "Newsroom", view_adcopy: "Ad copy", view_support: "Support",
    error: "Error", error_status: "Error {0}: {1}", record_failed: "Not kept: {0}",
  },
  zh: {
    title: "Weaver 写作工作台", tagline: "多稿并排、新闻编辑、广告文案与客服回复；每次选择都会保存。",
    lang_switch: "English", lang_switch_aria: "将界面切换为英文", api_key: "API 密钥",
    api_key_ph: "仅在服务器要求时填写", views: "视图", tab_write: "写作", tab_newsroom: "新闻编辑",
    tab_adcopy: "广告文案", tab_support: "客服", tab_history: "历史",
    model: "模型", task: "任务", drafts_n: "稿数", temperature: "温度", max_tokens: "最大词元数",
    max_tokens_ph: "任务默认", blind: "盲评（微调模型对比基座）", write: "生成", stop: "停止",
    drafts: "草稿", draft: "草稿 {0}", writing: "生成中…", done: "完成", done_length: "完成（达到长度上限）",
    copied: "已复制", saved: "已保存", chosen: "已选", rejected: "不满意",
    choose: "选用", choose_aria: "选用草稿 {0}", copy: "复制", copy_aria: "复制草稿 {0}",
    sources: "来源", sources_aria: "查看草稿 {0} 每句话在原文中的依据",
    explain_hint: "将鼠标移到某句（或用 Tab 键选中）即可看到原文中支持它的句子。",
    unsupported: "原文中没有支持这句话的内容", invented: "原文中没有：{0}",
    regen: "重新生成", regen_aria: "重新生成草稿 {0}", down: "不满意", down_aria: "对草稿 {0} 点踩",
    edit_aria: "草稿 {0}，可编辑", written_by: "由 {0} 生成", base: "基座",
    status_writing: "正在生成 {0} 篇草稿…", status_done: "完成。请选出最好的草稿，可直接修改或复制。",
    status_stopped: "已停止。", status_blind: "盲评：{0} 与 {1} 的草稿已打乱；选定后显示作者。",
    no_base: "盲评需要微调模型：请选择一个适配器（基座模型同时提供）。",
    recording_off: "此服务器不保存历史（--studio-db none）。", key_hint: " —— 请在上方输入服务器的 API 密钥。",
    news_paste: "文章（用只含 --- 的一行分隔多篇）", news_files: "或上传文件（.txt、.md、.jsonl）",
    news_n: "备选标题数", lang: "语言", news_run: "处理文章", news_summary: "摘要",
    news_headline: "标题", news_pick: "选定标题", news_download: "下载汇编",
    news_none: "请粘贴或上传至少一篇文章。", news_progress: "已完成 {0}/{1} 篇",
    news_failed: "未处理：{0}", news_md: "Markdown", news_html: "HTML", news_jsonl: "JSONL",
    ad_product: "产品", ad_audience: "受众", ad_tone: "语气", ad_keywords: "关键词（逗号分隔）",
    ad_attributes: "或属性串（AdvertiseGen 格式）", ad_attributes_ph: "类型#上衣*颜色#白色",
    ad_n: "候选数", ad_run: "生成广告文案", ad_rank: "第 {0} 名", ad_score: "得分 {0}",
    ad_parts: "关键词 {0} · 长度 {1}", ad_parts_ll: "似然 {0} · 关键词 {1} · 长度 {2}",
    sup_question: "客户消息", sup_run: "起草回复", sup_reply: "回复（发送前可修改）",
    sup_citations: "来源", sup_none: "未引用段落", sup_handed: "已转接人工客服",
    sup_review: "发送前请核实：这条回复缺少知识库依据。",
    sup_send: "发送", sup_sent: "已发送：最终文本已保存。", sup_passage: "段落 {0}", close: "关闭",
    hist_empty: "暂无记录。", hist_open: "打开", hist_open_aria: "打开 {0}", hist_refresh: "刷新",
    hist_articles: "{0} 篇文章", hist_drafts: "{0} 篇草稿", hist_final: "最终：{0}",
    view_write: "写作", view_newsroom: "新闻编辑", view_adcopy: "广告文案", view_support: "客服",
    error: "错误", error_status: "错误 {0}：{1}", record_failed: "未保存：{0}",
  },
};

W.lang = "en";

W.t = function (key, ...args) {
  const table = W.STRINGS[W.lang] || W.STRINGS.en;
  const text = key in table ? table[key] : W.STRINGS.en[key] || key;
  return text.replace(/\{(\d)\}/g, (_, i) => String(args[Number(i)]));
};

W.translate = function (root) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = W.t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-aria]")) el.setAttribute("aria-label", W.t(el.dataset.i18nAria));
  for (const el of root.querySelectorAll("[data-i18n-ph]")) el.placeholder = W.t(el.dataset.i18nPh);
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = W.t(el.dataset.i18nTitle);
};

W.applyLang = function (lang) {
  W.lang = lang in W.STRINGS ? lang : "en";
  document.documentElement.lang = W.lang === "zh" ? "zh-CN" : "en";
  document.title = W.t("title");
  W.translate(document);
  try { localStorage.setItem("weaver-lang", W.lang); } catch (e) { /* storage off: the switch still works */ }
  document.dispatchEvent(new CustomEvent("weaver-lang"));
};
