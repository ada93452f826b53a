package pgstore_test

import (
	"testing"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/store/pgstore"
	"github.com/msisync/msisync/internal/store/storetest"
)

func TestApplyRollback(t *testing.T) {
	adminPool(t)
	s := open(t, newSchema(t), clock.NewFake(storetest.Start))
	defer s.Close()
	storetest.ApplyRollback(t, s, func(step string, err error) func() {
		return pgstore.SetApplyHook(func(at string) error {
			if at == step {
				return err
			}
			return nil
		})
	})
}
