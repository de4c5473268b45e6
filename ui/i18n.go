package ui

import (
	"sort"
	"strconv"
	"strings"
)

// Lang is a language the page is written in.
type Lang string

// The page's languages. Every string exists in each (TestStringsComplete).
const (
	En Lang = "en"
	Zh Lang = "zh"
)

// HTMLLang is the value of <html lang>.
func (l Lang) HTMLLang() string {
	if l == Zh {
		return "zh-CN"
	}
	return "en"
}

// strings holds every visible string of the page. Keys starting with "js."
// are also handed to the script (for text it sets at run time); {n}-style
// placeholders are filled in by the script.
var texts = map[Lang]map[string]string{
	En: {
		"title":             "Answer a question",
		"brand":             "Question from your agent",
		"loading":           "Loading the question…",
		"noscript":          "This page needs JavaScript: the key to this question is in the link itself and never reaches the server until the page sends it.",
		"pending.heading":   "Your agent is asking",
		"metadata":          "Details from the agent",
		"options.one":       "Choose one",
		"options.many":      "Choose one or more",
		"freetext.label":    "Your answer",
		"freetext.optional": "Or write your own answer",
		"submit":            "Send answer",
		"hint.shortcut":     "Ctrl+Enter (⌘+Enter on Mac) sends the answer.",
		"submitted.heading": "Answer sent",
		"submitted.text":    "Your agent has your answer. You can close this page.",
		"answer.heading":    "Your answer",
		"answer.options":    "Your choice",
		"answer.text":       "Your words",
		"answer.time":       "Sent",
		"expired.heading":   "This question has expired",
		"expired.text":      "The time to answer ran out, so your agent went on without an answer.",
		"cancelled.heading": "This question was withdrawn",
		"cancelled.text":    "Your agent no longer needs an answer.",
		"notfound.heading":  "This link does not work",
		"notfound.text":     "It may be incomplete or mistyped, or the question it pointed to is gone. Ask your agent for a new link.",
		"error.heading":     "The server cannot be reached",
		"error.text":        "Check your connection. The page keeps trying.",
		"question":          "The question",
		"recommended":       "Recommended",
		"yes":               "Yes",
		"no":                "No",
		"required":          "required",
		"answer.answers":    "Your answers",
		"timeout.heading":   "Answered by the time limit",
		"timeout.text":      "Nobody answered in time, so the agent's rule for that case chose:",
		"attach.label":      "Attach files (optional)",
		"attach.pick":       "Choose files",
		"attach.camera":     "Take a photo",
		"answer.files":      "Your files",
		"draft.heading":     "Your unsent answer",
		"draft.text":        "You had started this answer on this device; it was not sent. It is shown here so that nothing you wrote is lost.",

		// The MCP Apps view (app/), shown inside the agent's conversation.
		"app.waiting":        "Waiting for the question…",
		"app.submitted.text": "Your agent has your answer.",
		"app.unavailable":    "This question cannot be shown here",
		"app.readonly":       "Answer this question through the link this server sent you: this server does not hand the question's key to the agent's app.",
		"app.form":           "This question is a form of several questions or shows images: answer it on its answer page, through the link.",

		"js.countdown":        "{t} left",
		"js.countdown.label":  "Time left to answer: {t}",
		"js.expiring":         "Time is up",
		"js.sending":          "Sending…",
		"js.live":             "Live",
		"js.reconnecting":     "Reconnecting…",
		"js.polling":          "Checking every few seconds",
		"js.err.choose":       "Choose an option or write an answer.",
		"js.err.chooseOnly":   "Choose an option.",
		"js.err.network":      "The answer could not be sent: the server cannot be reached. Try again.",
		"js.err.server":       "The answer could not be sent: {m}",
		"js.status.pending":   "Waiting for your answer",
		"js.status.changed":   "This question changed: {s}",
		"js.none":             "—",
		"js.hours":            "{h} h {m} min",
		"js.err.required":     "Answer the required question: {q}",
		"js.err.form":         "Answer at least one question.",
		"js.err.number":       "Enter a number for: {q}",
		"js.draft.choices":    "Your choice",
		"js.draft.text":       "Your words",
		"js.image.alt":        "Image {n} from your agent",
		"js.attach.hint":      "Paste, drop or choose up to {n} files of at most {size} each ({types}).",
		"js.attach.tooBig":    "{name} is {size}; files may be at most {max}. It was not uploaded.",
		"js.attach.tooMany":   "At most {n} files can be attached. {name} was not added.",
		"js.attach.type":      "{name} is not a type this page takes ({types}). It was not uploaded.",
		"js.attach.failed":    "{name} could not be uploaded: {m}",
		"js.attach.uploading": "Uploading {name}: {p}%",
		"js.attach.done":      "{name} uploaded",
		"js.attach.remove":    "Remove {name}",
		"js.attach.wait":      "Wait until the files have finished uploading.",
		"js.draft.files":      "Your files",

		"inbox.title":      "Inbox",
		"inbox.heading":    "Your questions",
		"inbox.signedin":   "Signed in as",
		"inbox.open":       "Waiting for you",
		"inbox.empty":      "No question is waiting for you.",
		"inbox.done":       "Recently finished",
		"inbox.done.empty": "Nothing finished recently.",
		"inbox.push.on":    "Turn on notifications on this device",
		"inbox.push.off":   "Turn off notifications on this device",

		"inboxjs.offline":             "The server cannot be reached. The page keeps trying.",
		"inboxjs.closed":              "A question was closed: {s}",
		"inboxjs.status.pending":      "Waiting for your answer",
		"inboxjs.status.submitted":    "Answered",
		"inboxjs.status.expired":      "Expired",
		"inboxjs.status.cancelled":    "Withdrawn",
		"inboxjs.asks":                "{a} asks",
		"inboxjs.agent":               "Your agent asks",
		"inboxjs.onBehalf":            "Asked for {p}, addressed to you too",
		"inboxjs.agentOf":             "{p}'s agent asks",
		"inboxjs.chooseOne":           "Choose one",
		"inboxjs.chooseMany":          "Choose one or more",
		"inboxjs.writeOwn":            "Or write your own answer",
		"inboxjs.yourAnswer":          "Your answer",
		"inboxjs.send":                "Send answer",
		"inboxjs.sending":             "Sending…",
		"inboxjs.sent":                "Answer sent",
		"inboxjs.failed":              "The answer could not be sent: {m}",
		"inboxjs.chooseOrWrite":       "Choose an option or write an answer.",
		"inboxjs.chooseOnly":          "Choose an option.",
		"inboxjs.recommended":         "Recommended",
		"inboxjs.required":            "required",
		"inboxjs.yes":                 "Yes",
		"inboxjs.no":                  "No",
		"inboxjs.errRequired":         "Answer the required question: {q}",
		"inboxjs.errForm":             "Answer at least one question.",
		"inboxjs.errNumber":           "Enter a number for: {q}",
		"inboxjs.imageAlt":            "Image {n} from the agent",
		"inboxjs.left":                "{t} left",
		"inboxjs.timeUp":              "Time is up",
		"inboxjs.hours":               "{h} h {m} min",
		"inboxjs.live":                "Live",
		"inboxjs.polling":             "Checking every few seconds",
		"inboxjs.pushOn":              "Notifications are on for this device.",
		"inboxjs.pushDenied":          "notifications are blocked for this site in the browser",
		"inboxjs.pushFailed":          "Notifications could not be changed: {m}",
		"oauth.brand":                 "Sign-in for AI apps",
		"oauth.consent.title":         "Allow access?",
		"oauth.consent.heading":       "Allow this app to ask you questions?",
		"oauth.consent.wants":         "wants to use this server on your behalf.",
		"oauth.consent.from":          "App published at",
		"oauth.consent.unverified":    "not verified (the app registered itself)",
		"oauth.consent.redirect":      "Sends you back to",
		"oauth.consent.as":            "Signed in as",
		"oauth.consent.scopes":        "It will be able to",
		"oauth.consent.approve":       "Allow",
		"oauth.consent.deny":          "Deny",
		"oauth.consent.hint":          "Your answer is remembered for this app; you can take it back on the page of allowed apps.",
		"oauth.scope.feedback:create": "Ask you questions",
		"oauth.scope.feedback:read":   "Read your answers to its questions",
		"oauth.scope.feedback:answer": "Answer its own questions for you",
		"oauth.consents.title":        "Allowed apps",
		"oauth.consents.heading":      "Apps you have allowed",
		"oauth.consents.none":         "You have not allowed any app.",
		"oauth.consents.revoke":       "Revoke",
		"oauth.error.heading":         "This sign-in cannot continue",
		"oauth.error.text":            "The app sent a request this server cannot accept, so you are not sent back to it. Start again from the app.",
	},
	Zh: {
		"title":             "回答问题",
		"brand":             "来自智能体的问题",
		"loading":           "正在加载问题…",
		"noscript":          "此页面需要 JavaScript：问题的密钥只在链接中，页面发送之前不会到达服务器。",
		"pending.heading":   "你的智能体在问你",
		"metadata":          "智能体附带的详情",
		"options.one":       "请选择一项",
		"options.many":      "可选择一项或多项",
		"freetext.label":    "你的回答",
		"freetext.optional": "或者写下你自己的回答",
		"submit":            "发送回答",
		"hint.shortcut":     "按 Ctrl+Enter（Mac 上 ⌘+Enter）发送回答。",
		"submitted.heading": "回答已发送",
		"submitted.text":    "智能体已收到你的回答。你可以关闭此页面。",
		"answer.heading":    "你的回答",
		"answer.options":    "你的选择",
		"answer.text":       "你的文字",
		"answer.time":       "发送时间",
		"expired.heading":   "此问题已过期",
		"expired.text":      "回答时间已到，智能体已在没有回答的情况下继续。",
		"cancelled.heading": "此问题已被撤回",
		"cancelled.text":    "智能体不再需要回答。",
		"notfound.heading":  "此链接无效",
		"notfound.text":     "链接可能不完整或有误，或者它指向的问题已不存在。请让智能体发一个新链接。",
		"error.heading":     "无法连接服务器",
		"error.text":        "请检查网络连接。页面会自动重试。",
		"question":          "问题",
		"recommended":       "推荐",
		"yes":               "是",
		"no":                "否",
		"required":          "必答",
		"answer.answers":    "你的回答",
		"timeout.heading":   "按超时规则作答",
		"timeout.text":      "没有人及时回答，因此智能体为这种情况设定的规则选择了：",
		"attach.label":      "附加文件（可选）",
		"attach.pick":       "选择文件",
		"attach.camera":     "拍照",
		"answer.files":      "你的文件",
		"draft.heading":     "你未发送的回答",
		"draft.text":        "你曾在此设备上开始填写这个回答，但尚未发送。它显示在这里，以免你写下的内容丢失。",

		"app.waiting":        "正在等待问题…",
		"app.submitted.text": "智能体已收到你的回答。",
		"app.unavailable":    "此问题无法在这里显示",
		"app.readonly":       "请通过服务器发给你的链接回答此问题：此服务器不会把问题的密钥交给智能体的应用。",
		"app.form":           "此问题是包含多个问题的表单或带有图片：请通过链接在回答页面上作答。",

		"js.countdown":        "剩余 {t}",
		"js.countdown.label":  "剩余回答时间：{t}",
		"js.expiring":         "时间已到",
		"js.sending":          "正在发送…",
		"js.live":             "实时",
		"js.reconnecting":     "正在重新连接…",
		"js.polling":          "每隔几秒检查一次",
		"js.err.choose":       "请选择一项或写下回答。",
		"js.err.chooseOnly":   "请选择一项。",
		"js.err.network":      "回答未能发送：无法连接服务器。请重试。",
		"js.err.server":       "回答未能发送：{m}",
		"js.status.pending":   "等待你的回答",
		"js.status.changed":   "问题状态已变化：{s}",
		"js.none":             "—",
		"js.hours":            "{h} 小时 {m} 分",
		"js.err.required":     "请回答必答问题：{q}",
		"js.err.form":         "请至少回答一个问题。",
		"js.err.number":       "请为此问题填写数字：{q}",
		"js.draft.choices":    "你的选择",
		"js.draft.text":       "你的文字",
		"js.attach.hint":      "可粘贴、拖放或选择最多 {n} 个文件，每个不超过 {size}（{types}）。",
		"js.attach.tooBig":    "{name} 大小为 {size}；文件最大为 {max}。未上传。",
		"js.attach.tooMany":   "最多可附加 {n} 个文件。未添加 {name}。",
		"js.attach.type":      "{name} 不是此页面接受的类型（{types}）。未上传。",
		"js.attach.failed":    "{name} 上传失败：{m}",
		"js.attach.uploading": "正在上传 {name}：{p}%",
		"js.attach.done":      "{name} 已上传",
		"js.attach.remove":    "移除 {name}",
		"js.attach.wait":      "请等待文件上传完成。",
		"js.draft.files":      "你的文件",
		"js.image.alt":        "智能体发送的图片 {n}",

		"inbox.title":      "收件箱",
		"inbox.heading":    "你的问题",
		"inbox.signedin":   "已登录：",
		"inbox.open":       "等待你回答",
		"inbox.empty":      "没有等待你回答的问题。",
		"inbox.done":       "最近结束",
		"inbox.done.empty": "最近没有结束的问题。",
		"inbox.push.on":    "在此设备上开启通知",
		"inbox.push.off":   "在此设备上关闭通知",

		"inboxjs.offline":             "无法连接服务器。页面会自动重试。",
		"inboxjs.closed":              "有一个问题已结束：{s}",
		"inboxjs.status.pending":      "等待你的回答",
		"inboxjs.status.submitted":    "已回答",
		"inboxjs.status.expired":      "已过期",
		"inboxjs.status.cancelled":    "已撤回",
		"inboxjs.asks":                "{a} 在问",
		"inboxjs.agent":               "你的智能体在问",
		"inboxjs.onBehalf":            "代 {p} 提问，也发给了你",
		"inboxjs.agentOf":             "{p} 的智能体在问",
		"inboxjs.chooseOne":           "请选择一项",
		"inboxjs.chooseMany":          "可选择一项或多项",
		"inboxjs.writeOwn":            "或者写下你自己的回答",
		"inboxjs.yourAnswer":          "你的回答",
		"inboxjs.send":                "发送回答",
		"inboxjs.sending":             "正在发送…",
		"inboxjs.sent":                "回答已发送",
		"inboxjs.failed":              "回答未能发送：{m}",
		"inboxjs.chooseOrWrite":       "请选择一项或写下回答。",
		"inboxjs.chooseOnly":          "请选择一项。",
		"inboxjs.recommended":         "推荐",
		"inboxjs.required":            "必答",
		"inboxjs.yes":                 "是",
		"inboxjs.no":                  "否",
		"inboxjs.errRequired":         "请回答必答问题：{q}",
		"inboxjs.errForm":             "请至少回答一个问题。",
		"inboxjs.errNumber":           "请为此问题填写数字：{q}",
		"inboxjs.imageAlt":            "智能体发送的图片 {n}",
		"inboxjs.left":                "剩余 {t}",
		"inboxjs.timeUp":              "时间已到",
		"inboxjs.hours":               "{h} 小时 {m} 分",
		"inboxjs.live":                "实时",
		"inboxjs.polling":             "每隔几秒检查一次",
		"inboxjs.pushOn":              "此设备已开启通知。",
		"inboxjs.pushDenied":          "浏览器已阻止此网站的通知",
		"inboxjs.pushFailed":          "通知设置未能更改：{m}",
		"oauth.brand":                 "AI 应用登录",
		"oauth.consent.title":         "是否允许访问？",
		"oauth.consent.heading":       "允许此应用向你提问吗？",
		"oauth.consent.wants":         "想代表你使用此服务器。",
		"oauth.consent.from":          "应用发布于",
		"oauth.consent.unverified":    "未验证（应用自行注册）",
		"oauth.consent.redirect":      "完成后返回",
		"oauth.consent.as":            "当前登录身份",
		"oauth.consent.scopes":        "它将能够",
		"oauth.consent.approve":       "允许",
		"oauth.consent.deny":          "拒绝",
		"oauth.consent.hint":          "此应用的授权会被记住；你可以在已授权应用页面中撤销。",
		"oauth.scope.feedback:create": "向你提问",
		"oauth.scope.feedback:read":   "读取你对其问题的回答",
		"oauth.scope.feedback:answer": "代你回答它自己的问题",
		"oauth.consents.title":        "已授权的应用",
		"oauth.consents.heading":      "你已授权的应用",
		"oauth.consents.none":         "你尚未授权任何应用。",
		"oauth.consents.revoke":       "撤销",
		"oauth.error.heading":         "此登录无法继续",
		"oauth.error.text":            "应用发来的请求无法被此服务器接受，因此不会把你送回该应用。请从应用中重新开始。",
	},
}

// T returns the string for key in l. A missing key is a bug caught by the
// tests; at run time it shows the key rather than nothing.
func T(l Lang, key string) string {
	if s, ok := texts[l][key]; ok {
		return s
	}
	return key
}

// Keys lists every key of l, sorted.
func Keys(l Lang) []string {
	keys := make([]string, 0, len(texts[l]))
	for k := range texts[l] {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// scriptStrings are the "js." strings of l, keyed without the prefix.
func scriptStrings(l Lang) map[string]string { return prefixed(l, "js.") }

// prefixed are the strings of l whose key starts with prefix, keyed
// without it.
func prefixed(l Lang, prefix string) map[string]string {
	out := map[string]string{}
	for k, v := range texts[l] {
		if name, ok := strings.CutPrefix(k, prefix); ok {
			out[name] = v
		}
	}
	return out
}

// NegotiateLang picks the page language: ?lang= when it is zh or en, else
// the first of zh/en in Accept-Language by q-value, else English. Anything
// unexpected is ignored, never echoed.
func NegotiateLang(query, acceptLanguage string) Lang {
	switch query {
	case "zh":
		return Zh
	case "en":
		return En
	}
	best, bestQ := En, -1.0
	// A hostile header is at most a few KiB (the server caps headers); the
	// loop looks at no more than 32 entries.
	for i, part := range strings.SplitN(acceptLanguage, ",", 33) {
		if i == 32 {
			break
		}
		tag, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f < 0 || f > 1 {
				continue
			}
			q = f
		}
		primary, _, _ := strings.Cut(strings.ToLower(strings.TrimSpace(tag)), "-")
		var l Lang
		switch primary {
		case "zh":
			l = Zh
		case "en":
			l = En
		default:
			continue
		}
		if q > bestQ {
			best, bestQ = l, q
		}
	}
	if bestQ == 0 {
		return En
	}
	return best
}

// ParseTheme returns "dark" or "light" for those values and "" (follow the
// device's prefers-color-scheme) for anything else.
func ParseTheme(query string) string {
	if query == "dark" || query == "light" {
		return query
	}
	return ""
}
