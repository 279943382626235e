package main

import (
	"hash/fnv"
	"math/rand"
	"strconv"
)

// outputLength is how many tokens an answer has and why it ended. Without ignore_eos the simulated
// model emits end-of-sequence after --eos-after tokens when max_tokens leaves room for it; with
// --eos-after 0 it never does and runs to max_tokens, as a model served without its chat template.
func outputLength(eosAfter, maxTokens int, ignoreEOS bool) (int, string) {
	if !ignoreEOS && eosAfter > 0 && maxTokens > eosAfter {
		return eosAfter, "stop"
	}
	return maxTokens, "length"
}

// answerRand is the source of a deterministic answer's words: a pure function of the rendered
// prompt, the request's seed and --answer-salt, so two simulator processes answer a greedy request
// alike, another prompt differently, and another salt (a planted model change) changes every answer.
func answerRand(rendered string, seed *int64, salt string) *rand.Rand {
	h := fnv.New64a()
	seedText := "none"
	if seed != nil {
		seedText = strconv.FormatInt(*seed, 10)
	}
	for _, part := range []string{rendered, seedText, salt} {
		_, _ = h.Write([]byte(part))
		_, _ = h.Write([]byte{0})
	}
	return rand.New(rand.NewSource(int64(h.Sum64())))
}

// answerTokens builds n output tokens: the prompt's words first in echo mode, then words drawn by
// pick (the server's shared random source, or a deterministic one).
func answerTokens(n int, echo bool, promptWords []string, pick func(int) int) []string {
	tokens := make([]string, n)
	for i := range tokens {
		if echo && i < len(promptWords) {
			tokens[i] = promptWords[i] + " "
		} else {
			tokens[i] = words[pick(len(words))] + " "
		}
	}
	return tokens
}
