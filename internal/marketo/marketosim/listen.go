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
	srv := &http.Server{Handler: New(opts), ReadHeaderTimeout: 10 * time.Second}
	log.Info("marketo simulator listening", "addr", ln.Addr().String(),
		"rest", "http://"+ln.Addr().String()+"/rest", "identity", "http://"+ln.Addr().String()+"/identity",
		"client_id", opts.ClientID)
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
