package manager

import (
	"errors"
	"fmt"
	"net/http"
)

// Error is a refusal with the HTTP status that fits it. Every operation of
// the Manager fails with an *Error, so the API layer never guesses codes.
type Error struct {
	Code int
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

func badRequest(format string, a ...any) error {
	return &Error{http.StatusBadRequest, fmt.Sprintf(format, a...)}
}

func notFound(format string, a ...any) error {
	return &Error{http.StatusNotFound, fmt.Sprintf(format, a...)}
}

func conflict(format string, a ...any) error {
	return &Error{http.StatusConflict, fmt.Sprintf(format, a...)}
}

// StatusCode returns the HTTP status for err: its own for an *Error, 500
// otherwise.
func StatusCode(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return http.StatusInternalServerError
}
