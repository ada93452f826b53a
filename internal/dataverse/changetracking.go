package dataverse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// ExpiredVersionStampCode is Dataverse's ExpiredVersionStamp error
// (-2147204270): a change-tracking token older than the organisation's
// ExpireChangeTrackingInDays ("Version stamp associated with the client has
// expired. Please perform a full sync.").
const ExpiredVersionStampCode = "0x80044352"

const expiredVersionStampText = "version stamp associated with the client has expired"

// IsDeltaTokenRejected reports whether err is Dataverse refusing a delta
// link: the ExpiredVersionStamp error (by code or by its text, since the
// HTTP status the Web API pairs it with is unconfirmed) or any 400 answer
// to it (a token Dataverse cannot read). Callers start a new token.
func IsDeltaTokenRejected(err error) bool {
	var e *APIError
	if !errors.As(err, &e) {
		return false
	}
	if strings.EqualFold(e.Code, ExpiredVersionStampCode) || strings.Contains(strings.ToLower(e.Message), expiredVersionStampText) {
		return true
	}
	return e.Status == http.StatusBadRequest || e.Status == http.StatusGone
}

// ChangeTrackingEnabled reports whether change tracking is enabled on a
// table (EntityDefinitions ChangeTrackingEnabled). Without it a
// Prefer: odata.track-changes read returns no delta link.
func (c *Client) ChangeTrackingEnabled(ctx context.Context, logicalName string) (bool, error) {
	if logicalName == "" || strings.ContainsAny(logicalName, "'/?#&") {
		return false, fmt.Errorf("dataverse: change tracking of %q: not a table logical name", logicalName)
	}
	target := "EntityDefinitions(LogicalName='" + logicalName + "')?$select=LogicalName,ChangeTrackingEnabled"
	_, body, err := c.do(ctx, request{method: http.MethodGet, target: target, idempotent: true})
	if err != nil {
		return false, fmt.Errorf("dataverse: change tracking of %s: %w", logicalName, err)
	}
	var def struct {
		ChangeTrackingEnabled *bool `json:"ChangeTrackingEnabled"`
	}
	if err := json.Unmarshal(body, &def); err != nil || def.ChangeTrackingEnabled == nil {
		return false, fmt.Errorf("dataverse: change tracking of %s: no ChangeTrackingEnabled in the table definition", logicalName)
	}
	return *def.ChangeTrackingEnabled, nil
}
