package syncer

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/msisync/msisync/internal/marketo/marketotype"
)

// Marketo is what the syncer needs from the Marketo client; the client in
// internal/marketo satisfies it.
type Marketo interface {
	// Sync upserts records; results are aligned with the input.
	Sync(ctx context.Context, obj marketotype.Object, req marketotype.SyncRequest) ([]marketotype.Result, error)
	// Query finds records by a filter (≤ 300 values per call is the client's job).
	Query(ctx context.Context, obj marketotype.Object, filterType string, values, fields []string) ([]marketotype.Record, error)
	// Delete removes records; results are aligned with the input.
	Delete(ctx context.Context, obj marketotype.Object, deleteBy string, input []marketotype.Record) ([]marketotype.Result, error)
}

// marketoID renders a Marketo id from a decoded JSON value.
func marketoID(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case float64:
		return strconv.FormatInt(int64(x), 10)
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case interface{ String() string }:
		return x.String()
	}
	return fmt.Sprint(v)
}

// classOfErr returns the class of a Marketo call error.
func classOfErr(err error) marketotype.Class {
	if errors.Is(err, marketotype.ErrQuotaExhausted) {
		return marketotype.ClassQuota
	}
	return marketotype.ClassOfError(err)
}

// codeOfErr returns the Marketo code and message of a call error, if any.
func codeOfErr(err error) (string, string) {
	var me *marketotype.Error
	if errors.As(err, &me) {
		return me.Code, me.Message
	}
	return "", err.Error()
}
