package brokertest

// LogTailBeforeStop is logTail(lines, true), for the external tests.
func (n *Node) LogTailBeforeStop(lines int) string { return n.logTail(lines, true) }
