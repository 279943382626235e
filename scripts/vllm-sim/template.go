package main

import (
	"regexp"
	"strings"
)

// chatTemplates are the names --chat-template accepts. Each renders a conversation the way the real
// template does (up to whitespace the tokenizer ignores), so the prompt-token count depends on both
// the text and the template: a server told the wrong template reports another count.
var chatTemplates = []string{"llama3", "mistral", "chatml", "none"}

// specialTokens count as one token each, as a real tokenizer's added tokens do. Literal occurrences
// in message text count as specials too: vLLM tokenizes the rendered template as one string.
var specialTokens = []string{
	"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
	"[INST]", "[/INST]", "<s>", "</s>", "<|im_start|>", "<|im_end|>",
}

// tokenRE is the simulated tokenizer: a special token, a run of word characters, or any other
// non-space character. It needs no model files and is deterministic across processes.
var tokenRE = func() *regexp.Regexp {
	alts := make([]string, 0, len(specialTokens)+2)
	for _, t := range specialTokens {
		alts = append(alts, regexp.QuoteMeta(t))
	}
	return regexp.MustCompile(strings.Join(append(alts, `\w+`, `[^\w\s]`), "|"))
}()

type message struct{ role, content string }

// countTokens is the simulated tokenizer's token count of text.
func countTokens(text string) int { return len(tokenRE.FindAllStringIndex(text, -1)) }

// render applies the named chat template to the conversation, generation prompt included.
func render(template string, msgs []message) string {
	var b strings.Builder
	switch template {
	case "llama3":
		b.WriteString("<|begin_of_text|>")
		for _, m := range msgs {
			b.WriteString("<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + m.content + "<|eot_id|>")
		}
		b.WriteString("<|start_header_id|>assistant<|end_header_id|>\n\n")
	case "mistral":
		// Mistral's template has no system turn: system text opens the next user turn.
		b.WriteString("<s>")
		system := ""
		for _, m := range msgs {
			switch m.role {
			case "system":
				system += m.content + "\n\n"
			case "assistant":
				b.WriteString(" " + m.content + "</s>")
			default:
				b.WriteString("[INST] " + system + m.content + " [/INST]")
				system = ""
			}
		}
		if system != "" {
			b.WriteString("[INST] " + system + "[/INST]")
		}
	case "chatml":
		for _, m := range msgs {
			b.WriteString("<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n")
		}
		b.WriteString("<|im_start|>assistant\n")
	default: // none: the contents joined by newlines, no template
		for i, m := range msgs {
			if i > 0 {
				b.WriteString("\n")
			}
			b.WriteString(m.content)
		}
	}
	return b.String()
}
