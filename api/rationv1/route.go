package rationv1

// RouteHintKey is the trailing-metadata key under which a node that does
// not lead a call's shard sends RouteHint messages (see the Routing
// service). It ends in "-bin", so gRPC carries the serialized messages as
// binary values.
const RouteHintKey = "ration-route-bin"
