"""The one exception type for bad user input.

Everything a user hands to hyperlt (preferences, configs, data files, checkpoints, CLI arguments) is
checked at the boundary and rejected with :class:`UserInputError`. The CLI turns it into one line on
stderr and exit code 2; library users can catch it like any ``ValueError``.
"""


class UserInputError(ValueError):
  """Raised when user input is invalid; the message names the field and what was expected."""


def require(condition: bool, message: str) -> None:
  """Raises :class:`UserInputError` with ``message`` unless ``condition`` holds."""
  if not condition:
    raise UserInputError(message)
