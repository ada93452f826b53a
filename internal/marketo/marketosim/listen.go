package marketosim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// ListenAndServe runs the simulator on addr until ctx is done. The log
// names the address and client id, never the secret.
func ListenAndServe(ctx context.Context, addr string, opts Options, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("marketosim: listen on %q: %w", addr, err)
	}
	sim := New(opts)
	mux := http.NewServeMux()
	mux.Handle("/sim/", http.StripPrefix("/sim", sim.Control()))
	mux.Handle("/", sim)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	// Cancelled on every return, so the ticker goroutine also stops when
	// Serve fails rather than only when the caller's ctx ends.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if opts.TickMSIEvery > 0 {
		n := opts.TickMSILeads
		if n <= 0 {
			n = 5
		}
		t := time.NewTicker(opts.TickMSIEvery)
		defer t.Stop()
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					sim.TickMSI(n)
				}
			}
		}()
	}
	log.Info("marketo simulator listening", "addr", ln.Addr().String(),
		"rest", "http://"+ln.Addr().String()+"/rest", "identity", "http://"+ln.Addr().String()+"/identity",
		"client_id", opts.ClientID, "control", "http://"+ln.Addr().String()+"/sim/ (state, stats, msi)")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-errc
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("marketosim: serve on %q: %w", addr, err)
	}
}
