package marketo

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/msisync/msisync/internal/marketo/marketotype"
)

// ActivityType is one entry of Get Activity Types.
type ActivityType struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
}

// ActivityTypes lists the instance's activity types
// (GET /rest/v1/activities/types.json); Adobe advises caching them for a day.
func (c *Client) ActivityTypes(ctx context.Context) ([]ActivityType, error) {
	op := "get activity types"
	env, err := c.do(ctx, call{op: op, endpoint: "activity types", method: http.MethodGet,
		path: "/rest/v1/activities/types.json"})
	if err != nil {
		return nil, err
	}
	var out []ActivityType
	if len(env.Result) > 0 {
		if err := json.Unmarshal(env.Result, &out); err != nil {
			return nil, &marketotype.Error{Op: op, Err: fmt.Errorf("decode result: %w", err)}
		}
	}
	return out, nil
}

// Activities reads the activities of up to ten types from token on
// (GET /rest/v1/activities.json), following moreResult until caught up. It
// returns them with the token to continue from next time.
func (c *Client) Activities(ctx context.Context, token string, typeIDs []int) ([]Activity, string, error) {
	op := "get activities"
	if token == "" {
		return nil, "", fmt.Errorf("marketo: %s: token is required (see PagingToken)", op)
	}
	if len(typeIDs) == 0 || len(typeIDs) > 10 {
		return nil, token, fmt.Errorf("marketo: %s: %d activity type ids, want 1 to 10", op, len(typeIDs))
	}
	ids := make([]string, len(typeIDs))
	for i, id := range typeIDs {
		ids[i] = strconv.Itoa(id)
	}
	return c.activityPages(ctx, op, "activities", "/rest/v1/activities.json", token,
		url.Values{"activityTypeIds": {strings.Join(ids, ",")}})
}
