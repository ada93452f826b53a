package backfill

import (
	"fmt"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress reports one entity's progress to Config.Progress and
// Config.ProgressWriter: a bar with done/total, rate and ETA on a terminal,
// a line per page elsewhere (logs, CI).
type progress struct {
	cfg    *Config
	entity string
	total  int
	start  time.Time
	first  int // rows done before this run (resumed pass)
	bar    *progressbar.ProgressBar
}

func newProgress(cfg *Config, entity string, total, done int) *progress {
	p := &progress{cfg: cfg, entity: entity, total: total, start: cfg.Clock.Now(), first: done}
	if f, ok := cfg.Progress.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.bar = progressbar.NewOptions(total,
			progressbar.OptionSetWriter(f),
			progressbar.OptionSetDescription(entity),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("rows"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(f) }),
		)
		_ = p.bar.Set(done)
	}
	return p
}

func (p *progress) add(n, done int) {
	if p.cfg.OnProgress != nil {
		p.cfg.OnProgress(p.entity, done, p.total)
	}
	if p.bar != nil {
		_ = p.bar.Add(n)
		return
	}
	if p.cfg.Progress == nil {
		return
	}
	line := fmt.Sprintf("backfill %s: %d", p.entity, done)
	if p.total >= 0 {
		line += fmt.Sprintf("/%d", p.total)
	}
	line += " rows"
	if el := p.cfg.Clock.Now().Sub(p.start).Seconds(); el > 0 {
		rate := float64(done-p.first) / el
		line += fmt.Sprintf(", %.0f rows/s", rate)
		if p.total > done && rate > 0 {
			line += fmt.Sprintf(", ETA %s", time.Duration(float64(p.total-done)/rate*float64(time.Second)).Round(time.Second))
		}
	}
	fmt.Fprintln(p.cfg.Progress, line)
}

// finish completes the bar, or leaves it where it stopped when the pass
// was interrupted.
func (p *progress) finish(done bool) {
	if p.bar == nil {
		return
	}
	if done {
		_ = p.bar.Finish()
	} else {
		_ = p.bar.Exit()
	}
}
