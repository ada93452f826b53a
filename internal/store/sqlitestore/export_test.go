package sqlitestore

// SetApplyHook lets tests run code inside Apply's transaction after each
// step; it returns a function restoring the previous hook.
func SetApplyHook(h func(step string) error) (restore func()) {
	prev := applyHook
	applyHook = h
	return func() { applyHook = prev }
}
