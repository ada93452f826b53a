package config

import "strings"

// Value is one setting as in force, for display: secrets are never
// included, only whether they are set.
type Value struct {
	Name    string
	Value   string // "" when unset or Secret (a caller may say where a generated secret is kept)
	Default bool   // the value is the default (the variable is unset)
	Secret  bool
	Set     bool // the variable is set (for secrets: the only thing shown)
	Help    string
}

// Effective lists every setting with the value in force. getenv is
// os.Getenv in production. Generated values (the webhook key, the admin
// token) show as their default, "(generated)".
func Effective(getenv func(string) string) []Value {
	out := make([]Value, 0, len(Settings))
	for _, s := range Settings {
		v := strings.TrimSpace(getenv(s.Name))
		e := Value{Name: s.Name, Secret: s.Secret, Set: v != "", Help: s.Help}
		switch {
		case s.Secret:
		case v == "":
			e.Value, e.Default = s.Default, true
		default:
			e.Value = redactURL(v)
		}
		out = append(out, e)
	}
	return out
}
