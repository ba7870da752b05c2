/* Shared by the board and the incident page: translations (Chinese by default, English
   by the switch), times in the configured zone, safe DOM building, JSON fetching. */
"use strict";
/* Every label, state and reason code, in both languages. Chinese is the default; the
   button switches (remembered in localStorage; ?lang=en also works). */
const I18N = {
  zh: {
    title: "Breakwater 调度看板", loading: "加载中…", warehouses: "仓库",
    wh_caption: "可用 / 已熔断 / 已暂停，原因、最新读数与断路器", col_id: "编号", col_name: "名称",
    col_cold: "冷链", col_state: "状态", col_reason: "原因", col_readings: "最新读数", col_breakers: "断路器",
    col_open_orders: "待出库", col_last_seen: "最近心跳", incidents: "最近事件", col_when: "时间",
    col_warehouse: "仓库", col_moved: "已改派", col_destinations: "改派去向", col_stuck: "需人工", col_closed: "恢复",
    waiting: "待处理订单", waiting_note: "未分仓或无法改派的订单：库存或仓库恢复时会自动重试（POST /orders/retry 立即重试）。",
    col_order: "订单", col_why: "原因", col_store: "门店", col_tier: "等级", col_received: "接单",
    orders_by_status: "订单状态", col_orders: "单量", metrics: "核心指标", notifications: "通知", col_kind: "类型",
    lookup: "订单查询", order_id: "订单号 / 渠道单号", why_not_label: "为何不是…", none: "（无）", look_up: "查询",
    lookup_hint: "输入订单号，查看时间线与分仓依据。", yes: "是", no: "否", open_incident: "进行中",
    no_incidents: "暂无事件", nothing_waiting: "暂无待处理订单", no_orders: "暂无订单", no_notifications: "暂无通知",
    no_warehouses: "暂无仓库", no_breakers: "无", total: "合计", all: "合计", all_ok: "全部仓库可用",
    down: "停用", updated: "更新于", live: "实时推送", reconnecting: "连接中断，正在重连…", ago_s: "{n} 秒前", ago_m: "{n} 分钟前",
    ago_h: "{n} 小时前", since: "自", oldest_shown: "仅显示最早的 {n} 单，共 {total} 单",
    first_response: "首次响应 p50", transparency: "状态透明度", self_healing: "自愈率",
    exceptions: "异常", shipped_n: "已出库", orders_n: "单", metrics_unavailable: "指标不可用（{e}）；需运行运维服务",
    not_yet: "未到", every_event: "全部事件", event: "事件", detail: "详情", why_went: "分仓依据",
    no_decision: "尚无分仓决策", why_not_q: "为何不是 {w}？", order_word: "订单", allocation: "分仓", reroute: "改派",
    rule_set: "规则版本", tier: "等级", needs_cold: "需冷链", incident: "事件", channel: "渠道", eta: "预计送达",
    from_to: "从 {from} 改派至 {to}", from_only: "从 {from}", cannot_reach: "无法连接调度中心：",
    // states
    available: "可用", tripped: "已熔断", paused: "已暂停", unavailable: "不可用", open: "进行中",
    received: "已接单", allocated: "已分仓", rerouted: "已改派", shipped: "已出库", in_transit: "在途",
    delivered: "已送达", unallocated: "待分仓", needs_attention: "需人工处理", cancelled: "已取消",
    pending: "待发", sent: "已发", failed: "失败", ok: "正常", clearing: "恢复中", unknown: "未知",
    force_tripped: "强制熔断", inhibited: "已抑制",
    // causes and reason codes
    breaker: "断路器", hold: "挂起", manual: "人工暂停", agent_offline: "网关离线", courier_stale: "快递无轨迹",
    threshold_exceeded: "超过阈值并持续", threshold_crossed: "超过阈值", back_within_limit: "回到阈值内",
    clearing_started: "开始恢复", clearing_interrupted: "恢复中断", data_returned: "数据恢复",
    dip_tolerated: "短暂回落（已忽略）", sensor_silent: "传感器无数据", sensor_back: "传感器恢复",
    acknowledged: "已确认", override_force_tripped: "人工强制熔断", override_inhibited: "人工抑制",
    override_released: "人工干预解除", override_expired: "人工干预到期", override_none: "无人工干预",
    current_state: "当前状态", restored: "重启后恢复", started: "启动", recovered: "已恢复",
    temperature_c: "温度", humidity_pct: "湿度", cold_chain: "冷链", franchisee: "加盟商", wecom: "企业微信",
    sms: "短信", webhook: "Webhook",
    // links to the intel pages
    nav_health: "订单健康报告", nav_returns: "退货原因",
    // the incident page
    incident_title: "事件", back_to_board: "返回看板", timeline: "时间线", tripping: "熔断读数",
    chart_title: "各库区温湿度", chart_temperature: "温度 (°C)", chart_humidity: "湿度 (%)", limit: "阈值",
    trip: "熔断", clear: "恢复", destinations: "改派去向", orders: "事件订单", filter: "筛选",
    all_outcomes: "全部结果", all_destinations: "全部仓库", search_orders: "订单号 / 门店",
    actions: "处置", acknowledge: "确认接手", assign: "指派给", assignee: "姓名",
    comment: "备注", add_comment: "添加备注", pause_wh: "暂停仓库", resume_wh: "恢复仓库",
    action_reason: "原因（必填）", confirm_pause: "确定暂停 {w}？其未出库订单将改派。原因：{r}",
    confirm_resume: "确定恢复 {w}？原因：{r}", need_reason: "请填写原因",
    acknowledged_by: "已确认：{who}", not_acknowledged: "尚未确认", assigned_to: "负责人：{who}",
    sensor: "传感器", value: "读数", duration: "持续", zone: "库区", outcome: "结果", moved: "已改派",
    stuck: "需人工", new_warehouse: "新仓库", store: "门店", channel_order: "渠道订单号", state_word: "状态",
    open_word: "进行中", closed_word: "已结束", no_readings: "无熔断读数（非传感器触发）", no_data: "暂无数据",
    first_over_limit: "首次超过阈值", event_delivered: "事件送达总部", late: "（断网后补发）",
    uplink_lost: "网关断线", uplink_regained: "网关恢复连线", last_will: "遗嘱消息", heartbeats_stopped: "心跳中断",
    online_status: "上线消息",
    pause: "人工暂停", resume: "人工恢复", notices_sent: "通知已发", notices_failed: "通知失败",
    notices_pending: "通知待发", assigned: "已指派", commented: "备注", escalated: "已升级", command: "断路器指令",
    closed: "事件结束", cleared: "断路器恢复", minutes: "{n} 分钟", seconds: "{n} 秒", above: "高于", below: "低于",
    for_word: "持续", actor_word: "操作人", several_found: "找到 {n} 笔订单：",
    meituan: "美团", wechat_mini: "微信小程序", douyin: "抖音", breaker_pending: "超过阈值，开始计时",
    security: "安全告警", col_outcome: "处理", col_agent: "网关", no_security: "暂无安全告警",
    nearby_staff: "联系附近仓库值班人员", nobody_near: "{r} 公里内无值班人员", inquiries_answered: "条咨询已答复",
    cmd_inhibit: "抑制（保持闭合）", cmd_force_tripped: "强制熔断", cmd_release: "解除人工干预",
    cmd_ack: "确认告警", cmd_minutes: "时长（分钟）", send_command: "发送指令",
    confirm_command: "确定对 {w} 的断路器 {b} 执行「{c}」？原因：{r}", outcome_sent: "已发送",
    outcome_applied: "网关已执行", outcome_refused: "网关拒绝", outcome_expired: "已过期",
  },
  en: {
    title: "Breakwater operations board", loading: "loading…", warehouses: "Warehouses",
    wh_caption: "Available / tripped / paused, with the reason, latest readings and open breakers",
    col_id: "ID", col_name: "Name", col_cold: "Cold chain", col_state: "State", col_reason: "Reason",
    col_readings: "Latest readings", col_breakers: "Open breakers", col_open_orders: "Open orders",
    col_last_seen: "Last seen", incidents: "Recent incidents", col_when: "When", col_warehouse: "Warehouse",
    col_moved: "Moved", col_destinations: "Moved to", col_stuck: "Stuck", col_closed: "Closed",
    waiting: "Waiting orders", waiting_note: "Unallocated or not reroutable: they get another try by themselves when stock or a warehouse comes back (POST /orders/retry runs it now).",
    col_order: "Order", col_why: "Why", col_store: "Store", col_tier: "Tier", col_received: "Received",
    orders_by_status: "Orders by status", col_orders: "Orders", metrics: "Seed metrics", notifications: "Notifications",
    col_kind: "Kind", lookup: "Order lookup", order_id: "Order id or channel order no.", why_not_label: "Why not warehouse…",
    none: "(none)", look_up: "Look up", lookup_hint: "Type an order id to see its timeline and why it went where it went.",
    yes: "yes", no: "no", open_incident: "open", no_incidents: "no incidents", nothing_waiting: "nothing waiting",
    no_orders: "no orders yet", no_notifications: "no notifications", no_warehouses: "no warehouses", no_breakers: "none",
    total: "total", all: "all", all_ok: "all warehouses available", down: "down", updated: "updated",
    live: "live", reconnecting: "connection lost, reconnecting…", ago_s: "{n} s ago", ago_m: "{n} min ago",
    ago_h: "{n} h ago", since: "since", oldest_shown: "oldest {n} of {total} shown",
    first_response: "First response p50", transparency: "Status transparency", self_healing: "Self-healing",
    exceptions: "exceptions", shipped_n: "shipped", orders_n: "orders",
    metrics_unavailable: "metrics unavailable ({e}); they come with the ops side", not_yet: "not yet",
    every_event: "Every event", event: "Event", detail: "Detail", why_went: "Why it went where it went",
    no_decision: "no allocation decision recorded yet", why_not_q: "Why not {w}?", order_word: "Order",
    allocation: "Allocation", reroute: "Reroute", rule_set: "rule set", tier: "tier", needs_cold: "needs cold chain",
    incident: "incident", channel: "channel", eta: "ETA", from_to: "from {from} to {to}", from_only: "from {from}",
    cannot_reach: "cannot reach the coordinator: ",
    available: "available", tripped: "tripped", paused: "paused", unavailable: "unavailable", open: "open",
    received: "received", allocated: "allocated", rerouted: "rerouted", shipped: "shipped", in_transit: "in transit",
    delivered: "delivered", unallocated: "unallocated", needs_attention: "needs attention", cancelled: "cancelled",
    pending: "pending", sent: "sent", failed: "failed", ok: "ok", clearing: "clearing", unknown: "unknown",
    force_tripped: "forced open", inhibited: "inhibited",
    breaker: "breaker", hold: "hold", manual: "paused by an operator", agent_offline: "gateway offline",
    courier_stale: "courier silent", threshold_exceeded: "above the limit for the whole delay",
    threshold_crossed: "crossed the limit", back_within_limit: "back within the limit",
    clearing_started: "clearing started", clearing_interrupted: "clearing interrupted", data_returned: "data returned",
    dip_tolerated: "short dip tolerated", sensor_silent: "sensor silent", sensor_back: "sensor back",
    acknowledged: "acknowledged", override_force_tripped: "forced open by an operator",
    override_inhibited: "inhibited by an operator", override_released: "override released",
    override_expired: "override expired", override_none: "no override", current_state: "current state",
    restored: "restored after a restart", started: "started", recovered: "recovered",
    temperature_c: "temperature", humidity_pct: "humidity", cold_chain: "cold chain", franchisee: "franchisee",
    wecom: "WeCom", sms: "SMS", webhook: "webhook",
    nav_health: "Order health report", nav_returns: "Return reasons",
    incident_title: "Incident", back_to_board: "Back to the board", timeline: "Timeline",
    tripping: "Tripping readings", chart_title: "Temperature and humidity per zone",
    chart_temperature: "Temperature (°C)", chart_humidity: "Humidity (%)", limit: "limit", trip: "trip",
    clear: "clear", destinations: "Moved to", orders: "The incident's orders", filter: "Filter",
    all_outcomes: "all outcomes", all_destinations: "all warehouses", search_orders: "order no. / store",
    actions: "Actions", acknowledge: "Acknowledge", assign: "Assign to", assignee: "name",
    comment: "Comment", add_comment: "Add comment", pause_wh: "Pause warehouse", resume_wh: "Resume warehouse",
    action_reason: "reason (required)", confirm_pause: "Pause {w}? Its unshipped orders will move. Reason: {r}",
    confirm_resume: "Resume {w}? Reason: {r}",
    need_reason: "A reason is required", acknowledged_by: "acknowledged by {who}", not_acknowledged: "not acknowledged",
    assigned_to: "assigned to {who}", sensor: "Sensor", value: "Value", duration: "For", zone: "Zone",
    outcome: "Outcome", moved: "moved", stuck: "stuck", new_warehouse: "New warehouse", store: "Store",
    channel_order: "Channel order no.", state_word: "State", open_word: "open", closed_word: "closed",
    no_readings: "no tripping readings (not a sensor trip)", no_data: "no data yet",
    first_over_limit: "first reading over the limit", event_delivered: "event reached head office",
    uplink_lost: "uplink lost", uplink_regained: "uplink regained", last_will: "last will",
    heartbeats_stopped: "heartbeats stopped", online_status: "online status",
    late: " (sent after the uplink came back)", pause: "paused by an operator", resume: "resumed by an operator",
    notices_sent: "notices sent", notices_failed: "notices failed", notices_pending: "notices waiting",
    assigned: "assigned", commented: "comment", escalated: "escalated", command: "breaker command",
    closed: "incident closed", cleared: "breaker cleared", minutes: "{n} min", seconds: "{n} s",
    above: "above", below: "below", for_word: "for", actor_word: "by",
    several_found: "{n} orders match:", meituan: "Meituan", wechat_mini: "WeChat mini-program",
    douyin: "Douyin",
    breaker_pending: "over the limit, counting down", security: "Security alerts",
    col_outcome: "Outcome", col_agent: "Agent", no_security: "no security alerts",
    nearby_staff: "Nearby on-duty staff", nobody_near: "nobody on duty within {r} km",
    inquiries_answered: "inquiries answered",
    cmd_inhibit: "inhibit (hold closed)", cmd_force_tripped: "force open", cmd_release: "release override",
    cmd_ack: "acknowledge alarm", cmd_minutes: "minutes", send_command: "Send command",
    confirm_command: "{c} breaker {b} of {w}? Reason: {r}", outcome_sent: "sent",
    outcome_applied: "applied by the gateway", outcome_refused: "refused by the gateway",
    outcome_expired: "expired",
  },
};
const UNITS = { temperature_c: " °C", humidity_pct: " %" };
let lang = new URLSearchParams(location.search).get("lang") || localStorage.getItem("breakwater.lang") || "zh";
if (!I18N[lang]) lang = "zh";
let tz = "Asia/Shanghai";
const FETCH_TIMEOUT_MS = 5000;
/* The session's CSRF token (cookie bw_csrf), sent as X-CSRF-Token on every POST. */
function csrfToken() {
  const found = document.cookie.split("; ").find(c => c.startsWith("bw_csrf="));
  return found ? decodeURIComponent(found.slice(8)) : "";
}
/* A reading as people write it: at most two decimals (9.3, not 9.299999999999999). */
function num(v) { return v === null || v === undefined ? "—" : String(Math.round(v * 100) / 100); }
function setLang(next) { lang = next; localStorage.setItem("breakwater.lang", lang); }
function applyStaticLabels() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
  const button = document.getElementById("lang");
  if (button) { button.textContent = lang === "zh" ? "English" : "中文"; button.lang = lang === "zh" ? "en" : "zh-CN"; }
}
function t(key, vars) {
  let s = (I18N[lang] && I18N[lang][key]) ?? I18N.en[key] ?? key;
  for (const [k, v] of Object.entries(vars || {})) s = s.replace("{" + k + "}", v);
  return s;
}
/* A code inside free text (an incident's "breaker cold_chain: threshold_exceeded") is
   translated where it is known; the rest (an operator's own words) stays as written. */
function tText(text) {
  if (!text) return text;
  return String(text).replace(/\b[a-z]+(?:_[a-z]+)+\b/g, code => (code in I18N.zh ? t(code) : code));
}
/* Build DOM nodes from data with textContent only: nothing from the API becomes markup. */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v; else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}
function badge(s, text) { return el("span", { class: "badge st-" + s }, text || t(s)); }
/* Every time in the one configured zone (ops.notify.timezone), the same as the notices. */
function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (isNaN(d)) return iso;
  const parts = new Intl.DateTimeFormat("en-CA", { timeZone: tz, year: "numeric", month: "2-digit",
    day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" }).formatToParts(d);
  const p = Object.fromEntries(parts.map(x => [x.type, x.value]));
  return p.year + "-" + p.month + "-" + p.day + " " + p.hour + ":" + p.minute + ":" + p.second;
}
function ago(iso) {
  if (!iso) return "—";
  const s = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
  return s < 120 ? t("ago_s", { n: s }) : s < 7200 ? t("ago_m", { n: Math.round(s / 60) }) : t("ago_h", { n: Math.round(s / 3600) });
}
async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" },
                               signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) {
    const msg = body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) : r.statusText;
    throw new Error("HTTP " + r.status + ": " + msg);
  }
  return body;
}

function fill(tbody, rows, cols, empty) {
  tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: cols, class: "muted" }, empty))]));
}
