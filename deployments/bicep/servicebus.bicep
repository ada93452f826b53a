// Azure Service Bus namespace and the msisync queue, with the same queue
// properties as `msisync queue setup`.
param location string = resourceGroup().location
param namespaceName string
@allowed(['Standard', 'Premium'])
param sku string = 'Standard'

resource ns 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: namespaceName
  location: location
  sku: { name: sku, tier: sku }
}

resource queue 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = {
  parent: ns
  name: 'msisync'
  properties: {
    lockDuration: 'PT1M'
    maxDeliveryCount: 10
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT10M'
    deadLetteringOnMessageExpiration: true
    defaultMessageTimeToLive: 'P14D'
    enablePartitioning: false
  }
}

// A send+listen rule for msisync (receiver sends, worker listens and replays).
resource rule 'Microsoft.ServiceBus/namespaces/queues/authorizationRules@2022-10-01-preview' = {
  parent: queue
  name: 'msisync'
  properties: { rights: ['Send', 'Listen'] }
}

output namespaceHost string = '${ns.name}.servicebus.windows.net'
