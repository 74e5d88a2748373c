package main

import (
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
)

// services returns the structure services a gridnode runs. The member core
// (grid) has none built in: this is where a program assembles its member.
func services() []op.Service {
	return []op.Service{maps.Service{}}
}
