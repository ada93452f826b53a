package remotecontext_test

import (
	"fmt"

	"github.com/msisync/msisync/internal/dataverse/remotecontext"
)

func ExampleParse() {
	body := []byte(`{"MessageName":"Update","PrimaryEntityName":"contact",
	  "PrimaryEntityId":"C0FFEE00-1234-4567-89AB-CDEF01234567",
	  "OperationCreatedOn":"\/Date(1767261660500+0000)\/",
	  "InputParameters":[{"key":"Target","value":{"__type":"Entity:http:\/\/schemas.microsoft.com\/xrm\/2011\/Contracts",
	    "LogicalName":"contact","Id":"c0ffee00-1234-4567-89ab-cdef01234567","Attributes":[
	      {"key":"emailaddress1","value":"ada@example.org"},
	      {"key":"parentcustomerid","value":{"__type":"EntityReference:http:\/\/schemas.microsoft.com\/xrm\/2011\/Contracts",
	        "Id":"B1A2C3D4-E5F6-4789-9ABC-DEF012345678","LogicalName":"account","Name":null}},
	      {"key":"statuscode","value":{"__type":"OptionSetValue:http:\/\/schemas.microsoft.com\/xrm\/2011\/Contracts","Value":1}},
	      {"key":"modifiedon","value":"\/Date(1767261660000)\/"}]}}]}`)
	e, err := remotecontext.Parse(body, remotecontext.Headers{})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(e.Key(), e.Message, e.Version, e.OccurredAt.Format("15:04:05.000"))
	fmt.Println(e.Attributes["emailaddress1"].Text(), e.Attributes["parentcustomerid"].Ref.ID, e.Attributes["statuscode"].Text())
	// Output:
	// contact/c0ffee00-1234-4567-89ab-cdef01234567 Update 1767261660000 10:01:00.500
	// ada@example.org b1a2c3d4-e5f6-4789-9abc-def012345678 1
}

func ExampleParse_badInput() {
	_, err := remotecontext.Parse([]byte(`{"MessageName":"Update","PrimaryEntityName":"contact","PrimaryEntityId":"42"}`), remotecontext.Headers{})
	for _, fe := range remotecontext.FieldErrors(err) {
		fmt.Println(fe.Field, "—", fe.Reason)
	}
	// Output:
	// PrimaryEntityId — "42" is not a GUID
}
