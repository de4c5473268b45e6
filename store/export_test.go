package store

// SubscribeCount reports how many subscribe confirmations r has seen. Every
// watcher had been signalled for a confirmation by the time it is counted.
func SubscribeCount(r *Redis) int64 { return r.subscribed.Load() }
