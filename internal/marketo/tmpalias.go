package marketo

import "github.com/msisync/msisync/internal/marketo/marketotype"

type Description = marketotype.Description
type FieldInfo = marketotype.FieldInfo
