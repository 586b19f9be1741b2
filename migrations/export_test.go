package migrations

// ApplyList applies an explicit migration list, so tests can add a failing one.
var ApplyList = apply
