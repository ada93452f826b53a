package main

import (
	"testing"

	"github.com/msisync/msisync/internal/config"
)

// The worker takes big batches from the embedded queue (a backlog then
// drains in full Marketo calls) but small ones from Service Bus, where each
// message's lock renewal is a round trip; MSISYNC_RECEIVE_MAX overrides both.
func TestReceiveMaxFollowsTheQueue(t *testing.T) {
	cases := []struct {
		cfg  config.Config
		want int
	}{
		{config.Config{BatchSize: 300}, 15000},
		{config.Config{BatchSize: 100}, 5000},
		{config.Config{BatchSize: 300, ServiceBus: "sb.example.servicebus.windows.net"}, 1500},
		{config.Config{BatchSize: 300, ServiceBus: "sb.example.servicebus.windows.net", ReceiveMax: 9000}, 9000},
		{config.Config{BatchSize: 300, ReceiveMax: 600}, 600},
	}
	for _, c := range cases {
		if got := receiveMax(&c.cfg); got != c.want {
			t.Errorf("receiveMax(batch %d, service bus %q, setting %d) = %d, want %d", c.cfg.BatchSize, c.cfg.ServiceBus, c.cfg.ReceiveMax, got, c.want)
		}
	}
}
