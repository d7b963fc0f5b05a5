package task

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestExecSpec(t *testing.T) {
	for _, tc := range []struct {
		name     string
		spec     string
		terminal bool
	}{
		{"set", `{"args":["sh"],"terminal":false}`, true},
		{"cleared", `{"args":["sh"],"terminal":true}`, false},
		{"absent", `{"args":["sh"]}`, true},
		{"unknown fields kept", `{"args":["sh"],"x-future":{"a":1},"terminal":false}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := execSpec([]byte(tc.spec), tc.terminal)
			if err != nil {
				t.Fatal(err)
			}
			var got, in map[string]any
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			_ = json.Unmarshal([]byte(tc.spec), &in)
			if got["terminal"] != tc.terminal {
				t.Errorf("terminal %v, want %v: %s", got["terminal"], tc.terminal, out)
			}
			delete(got, "terminal")
			delete(in, "terminal")
			a, _ := json.Marshal(got)
			b, _ := json.Marshal(in)
			if string(a) != string(b) {
				t.Errorf("other fields changed: %s, want %s", a, b)
			}
		})
	}
	for _, bad := range []string{"", "null", "[]", "3", "{", `"x"`} {
		if _, err := execSpec([]byte(bad), false); !errors.Is(err, errInvalid) {
			t.Errorf("execSpec(%q): %v, want errInvalid", bad, err)
		}
	}
}
