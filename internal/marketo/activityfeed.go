package marketo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
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
			return nil, &Error{Op: op, Err: fmt.Errorf("decode result: %w", err)}
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
	var out []Activity
	for page := 0; page < 10000; page++ {
		env, err := c.do(ctx, call{op: op, endpoint: "activities", method: http.MethodGet,
			path:  "/rest/v1/activities.json",
			query: url.Values{"nextPageToken": {token}, "activityTypeIds": {strings.Join(ids, ",")}}})
		if err != nil {
			return out, token, err
		}
		var raw []struct {
			ID                    json.Number `json:"id"`
			MarketoGUID           string      `json:"marketoGUID"`
			LeadID                json.Number `json:"leadId"`
			ActivityDate          string      `json:"activityDate"`
			ActivityTypeID        int         `json:"activityTypeId"`
			PrimaryAttributeValue any         `json:"primaryAttributeValue"`
			Attributes            []struct {
				Name  string `json:"name"`
				Value any    `json:"value"`
			} `json:"attributes"`
		}
		if len(env.Result) > 0 {
			dec := json.NewDecoder(bytes.NewReader(env.Result))
			dec.UseNumber()
			if err := dec.Decode(&raw); err != nil {
				return out, token, &Error{Op: op, Err: fmt.Errorf("decode result: %w", err)}
			}
		}
		for _, r := range raw {
			a := Activity{MarketoGUID: r.MarketoGUID, ActivityTypeID: r.ActivityTypeID, Attributes: map[string]any{}}
			a.ID, _ = r.ID.Int64()
			a.LeadID, _ = r.LeadID.Int64()
			for _, layout := range []string{"2006-01-02T15:04:05Z0700", time.RFC3339} {
				if t, err := time.Parse(layout, r.ActivityDate); err == nil {
					a.ActivityDate = t
					break
				}
			}
			if r.PrimaryAttributeValue != nil {
				a.Attributes["primaryAttributeValue"] = r.PrimaryAttributeValue
			}
			for _, at := range r.Attributes {
				a.Attributes[at.Name] = at.Value
			}
			out = append(out, a)
		}
		if env.NextPageToken != "" {
			token = env.NextPageToken
		}
		if !env.MoreResult {
			break
		}
	}
	return out, token, nil
}
