// Package api embeds msisync's published interface documents: the OpenAPI
// description of the HTTP API, the JSON Schema of the change event that
// travels on the queue, and the example requests the README's curl commands
// post.
package api

import _ "embed"

// OpenAPI is api/openapi.yaml (OpenAPI 3.1).
//
//go:embed openapi.yaml
var OpenAPI []byte

// EventSchema is api/event.schema.json (JSON Schema 2020-12 of event.Event).
//
//go:embed event.schema.json
var EventSchema []byte

// ExampleDataverseUpdate is a Dataverse webhook delivery: an async Update of
// a contact with pre and post images.
//
//go:embed examples/dataverse-update-contact.json
var ExampleDataverseUpdate []byte

// ExampleCustomEvent is a simple-envelope change.
//
//go:embed examples/custom-event.json
var ExampleCustomEvent []byte
