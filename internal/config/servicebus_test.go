package config

import (
	"strings"
	"testing"
)

func TestServiceBusMaxMessageBytes(t *testing.T) {
	c, err := Load(env(map[string]string{}))
	if err != nil {
		t.Fatal(err)
	}
	if c.ServiceBusMaxMessageBytes != 256*1024 {
		t.Errorf("default = %d, want 262144 (Standard tier)", c.ServiceBusMaxMessageBytes)
	}
	c, err = Load(env(map[string]string{"MSISYNC_SERVICEBUS_MAX_MESSAGE_BYTES": "1048576"}))
	if err != nil || c.ServiceBusMaxMessageBytes != 1<<20 {
		t.Fatalf("Premium 1 MB: %v, %v", c, err)
	}
	_, err = Load(env(map[string]string{"MSISYNC_SERVICEBUS_MAX_MESSAGE_BYTES": "100"}))
	if err == nil || !strings.Contains(err.Error(), "MSISYNC_SERVICEBUS_MAX_MESSAGE_BYTES") {
		t.Fatalf("100 bytes: err = %v, want one naming the setting", err)
	}
}
