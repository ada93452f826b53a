package main

// The console in a real browser: headless Chromium (Debian's chromium
// package) driven over the DevTools protocol by chromedp, against a real
// zero-config `msisync serve`.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/msisync/msisync/internal/config"
)

// chromiumPath finds the browser; without one the test skips locally and
// fails under CI=true (.ci/run installs it).
func chromiumPath(t *testing.T) string {
	t.Helper()
	// Debian's /usr/bin/chromium is a wrapper script; the binary behind it
	// starts faster and takes the same flags.
	for _, p := range []string{"/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	msg := "Chromium not found (apt-get install chromium): the console's browser test needs it"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI=true requires it")
	}
	t.Skip(msg)
	return ""
}

// browser starts headless Chromium with nothing that reaches the network
// and a fresh profile.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	var ctx context.Context
	var cancelCtx context.CancelFunc
	// Accept every confirm() the page asks (replay, purge), as a person
	// clicking OK; listeners must not run commands themselves.
	ctx, cancelCtx = chromedp.NewContext(actx, chromedp.WithListener(func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			go func() {
				_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
			}()
		}
	}))
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	return ctx
}

// step runs browser actions with a bound, failing the test with what was asked.
func step(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, pollTimeout)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		t.Fatalf("%s: %v\npage text:\n%s", what, err, textOf(ctx, "main"))
	}
}

// value runs one action that returns a value, bounded like step.
func value[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, pollTimeout)
	defer cancel()
	v, err := chromedp.Run(sctx, a)
	if err != nil {
		t.Fatalf("%s: %v\npage text:\n%s", what, err, textOf(ctx, "main"))
	}
	return v
}

// textOf is the visible text of sel now ("" when absent).
func textOf(ctx context.Context, sel string) string {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	txt, _ := chromedp.Run(sctx, chromedp.Text(chromedp.CSS(sel)))
	return txt
}

// waitText reloads nothing: it polls the live page until sel's text satisfies ok.
func waitText(t *testing.T, ctx context.Context, what, sel string, ok func(string) bool) string {
	t.Helper()
	var txt string
	deadline := time.Now().Add(pollTimeout)
	for {
		txt = textOf(ctx, sel)
		if ok(txt) {
			return txt
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s shows %q after %s", what, sel, txt, pollTimeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// shot saves a full-page screenshot when MSISYNC_CONSOLE_SCREENSHOTS names a folder.
func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("MSISYNC_CONSOLE_SCREENSHOTS")
	if dir == "" {
		return
	}
	png := value(t, ctx, "screenshot "+name, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestConsoleInABrowser(t *testing.T) {
	ctx := browser(t)
	start := time.Now()
	dataDir, base := cleanEnv(t)
	t.Setenv("MSISYNC_MAX_ATTEMPTS", "1") // a contact without its account is dead-lettered on its second try
	t.Setenv("MSISYNC_MSI_INTERVAL", "0")
	svc := startServe(t, base, "serve")

	// The start-up banner prints the console URL with the login token.
	m := regexp.MustCompile(`Console: (http://\S+/console/login#token=\S+)`).FindStringSubmatch(svc.stderr.String())
	if m == nil {
		t.Fatalf("start-up banner has no console URL:\n%s", svc.stderr.String())
	}
	consoleURL := m[1]
	tokenB, err := os.ReadFile(filepath.Join(dataDir, config.AdminTokenFile))
	if err != nil {
		t.Fatalf("admin token file: %v", err)
	}
	token := strings.TrimSpace(string(tokenB))
	key := webhookKey(t, dataDir)
	send := func(name string) {
		t.Helper()
		if code, _, body := post(t, base+"/webhooks/events", readExample(t, name), "x-msisync-key", key); code != http.StatusAccepted {
			t.Fatalf("POST %s: %d %s", name, code, body)
		}
	}
	const contactID = "9a100000-0000-4000-8000-000000000003"

	// The contact alone: its account and owner are not in Marketo, so it
	// is requeued once, then dead-lettered.
	send("demo-3-contact.json")
	eventually(t, "the contact is dead-lettered", func() (bool, string) {
		req, _ := http.NewRequest(http.MethodGet, base+"/admin/v1/dlq", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		var l struct{ Count int }
		_ = json.NewDecoder(resp.Body).Decode(&l)
		return l.Count == 1, fmt.Sprintf("status %d, %d dead letters", resp.StatusCode, l.Count)
	})
	send("demo-1-user.json")
	send("demo-2-account.json")
	eventually(t, "user and account synced", func() (bool, string) {
		st := sandboxState(t, base)
		return len(st.SalesPersons) == 1 && len(st.Companies) == 1, st.String()
	})

	// A wrong token is refused.
	step(t, ctx, "wrong token",
		chromedp.Navigate(base+"/console/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), "not-the-admin-token-123"),
		chromedp.Submit(chromedp.ID("login-form")),
		chromedp.WaitVisible(chromedp.ID("login-error")),
	)
	if msg := textOf(ctx, "#login-error"); !strings.Contains(msg, "Wrong admin token") {
		t.Fatalf("wrong token: login page says %q", msg)
	}

	// The printed URL logs in by itself and lands on the overview, whose
	// numbers come from what just happened.
	step(t, ctx, "open the printed console URL", chromedp.Navigate(consoleURL), chromedp.WaitVisible(chromedp.ID("overview")))
	if loc := value(t, ctx, "location", chromedp.Location()); strings.Contains(loc, "token") {
		t.Errorf("the token stayed in the address bar: %s", loc)
	}
	waitText(t, ctx, "overview: dead letters in the queue", "#q-dead", func(s string) bool { return s == "1" })
	waitText(t, ctx, "overview: events received", "#received", func(s string) bool { return s == "3" })
	waitText(t, ctx, "overview: events synced", "#synced", func(s string) bool { return s == "2" })
	waitText(t, ctx, "overview: sync lag", "#lag-p50", func(s string) bool { return strings.HasSuffix(s, "s") })
	waitText(t, ctx, "overview: dead letters by reason", "#deadletters", func(s string) bool { return strings.Contains(s, "MissingDependency") })
	waitText(t, ctx, "overview: instance check", "#instance", func(s string) bool { return strings.Contains(s, "ok") })
	shot(t, ctx, "console-overview")

	// A POST without the CSRF token is refused, even with the session.
	status := value(t, ctx, "POST without CSRF token", chromedp.Evaluate[int](`fetch("/console/api/deadletters/replay", {method: "POST",
		headers: {"Content-Type": "application/json"}, body: JSON.stringify({ids: ["x"]})}).then(r => r.status)`, chromedp.EvalAwaitPromise))
	if status != http.StatusForbidden {
		t.Fatalf("POST without the CSRF token: %d, want 403", status)
	}

	// Find the dead letter, open it, replay it.
	step(t, ctx, "dead letters filtered by table",
		chromedp.Navigate(base+"/console/deadletters?entity=contact&since=1h"),
		chromedp.WaitVisible(chromedp.ID("dl-table")),
	)
	waitText(t, ctx, "dead letter row", "#dl-table tbody", func(s string) bool {
		return strings.Contains(s, contactID) && strings.Contains(s, "MissingDependency")
	})
	shot(t, ctx, "console-deadletters")
	step(t, ctx, "open the dead letter",
		chromedp.Click(chromedp.CSS("#dl-table tbody a")),
		chromedp.WaitVisible(chromedp.ID("dl-description")),
	)
	if reason := textOf(ctx, "#dl-description"); !strings.Contains(reason, "missing dependency") || !strings.Contains(reason, "of contact "+contactID) {
		t.Fatalf("dead letter's full reason %q does not name the missing dependency", reason)
	}
	step(t, ctx, "select and replay",
		chromedp.Navigate(base+"/console/deadletters"),
		chromedp.WaitVisible(chromedp.ID("dl-table")),
		chromedp.Click(chromedp.ID("select-all")),
		chromedp.Click(chromedp.CSS(`button[data-bulk="replay"]`)),
	)
	waitText(t, ctx, "replay progress", "#bulk-status", func(s string) bool { return strings.HasPrefix(s, "Replayed 1 of 1") })
	waitText(t, ctx, "dead letters empty after the replay", "main", func(s string) bool { return strings.Contains(s, "No dead letters") })

	// Watch it sync on the record page: history, checks, Marketo id.
	recordURL := base + "/console/records?entity=contact&id=" + strings.ToUpper(contactID)
	deadline := time.Now().Add(pollTimeout)
	for {
		step(t, ctx, "record page", chromedp.Navigate(recordURL), chromedp.WaitVisible(chromedp.ID("history")))
		hist := textOf(ctx, "#history")
		if strings.Contains(hist, "synced") {
			if !strings.Contains(hist, "dead-lettered") || !strings.Contains(hist, "requeued") {
				t.Fatalf("history does not show the way there:\n%s", hist)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replayed contact did not sync; history:\n%s", hist)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if checks := textOf(ctx, "#checks"); !strings.Contains(checks, "healthy") || strings.Contains(checks, "fail") {
		t.Fatalf("doctor checks after the sync:\n%s", checks)
	}
	ids := textOf(ctx, "#ids")
	if lead := find(sandboxState(t, base).Leads, "externalPersonId", contactID); lead == nil || !strings.Contains(ids, fmt.Sprint(lead["id"])) {
		t.Fatalf("Marketo ids %q, sandbox lead %v", ids, lead)
	}
	shot(t, ctx, "console-record")

	// By email finds the same record.
	step(t, ctx, "find by email", chromedp.Navigate(base+"/console/records?email=ada.lovelace@contoso.example"),
		chromedp.WaitVisible(chromedp.ID("checks")))
	if title := textOf(ctx, ".record-title"); !strings.Contains(title, contactID) {
		t.Fatalf("by email found %q", title)
	}

	step(t, ctx, "settings", chromedp.Navigate(base+"/console/settings"), chromedp.WaitVisible(chromedp.ID("settings")))
	settings := textOf(ctx, "#settings")
	if !strings.Contains(settings, "MSISYNC_MAX_ATTEMPTS") || !strings.Contains(settings, "MSISYNC_ADMIN_TOKEN") || strings.Contains(settings, token) || strings.Contains(settings, key) {
		t.Fatalf("settings page: want every setting and no secret:\n%s", settings)
	}
	shot(t, ctx, "console-settings")
	if os.Getenv("MSISYNC_CONSOLE_SCREENSHOTS") != "" {
		step(t, ctx, "phone width", chromedp.EmulateViewport(390, 844), chromedp.Navigate(base+"/console/"), chromedp.WaitVisible(chromedp.ID("overview")))
		shot(t, ctx, "console-overview-phone")
		step(t, ctx, "desktop width", chromedp.EmulateViewport(1280, 900))
		if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}}); err != nil {
			t.Fatalf("dark mode: %v", err)
		}
		step(t, ctx, "dark overview", chromedp.Navigate(base+"/console/"), chromedp.WaitVisible(chromedp.ID("overview")))
		shot(t, ctx, "console-overview-dark")
	}

	// Log out: the console asks for the token again.
	step(t, ctx, "log out", chromedp.Click(chromedp.CSS(".logout button")), chromedp.WaitVisible(chromedp.ID("login-form")),
		chromedp.Navigate(base+"/console/settings"), chromedp.WaitVisible(chromedp.ID("login-form")))
	t.Logf("browser journey took %s", time.Since(start).Round(time.Millisecond))
}
