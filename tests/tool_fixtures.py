"""Tools and environments of a user's own, for tests/test_tools.py (imported by `package.module:name`)."""


def add(a: int, b: int) -> int:
    """Add two whole numbers.

    Args:
        a: The first number.
        b: The second number.

    Returns:
        Their sum.
    """
    return a + b


def undocumented(a, b):
    return a + b


class Adder:
    """A user's environment: an `add` tool, and the reward it owns (1 when the rollout called add(12, 7))."""

    def reset(self, **row):
        self.sums = []

    def add(self, a: int, b: int) -> int:
        """Add two whole numbers.

        Args:
            a: The first number.
            b: The second number.

        Returns:
            Their sum.
        """
        self.sums.append(a + b)
        return a + b

    def get_reward(self) -> float:
        return 1.0 if self.sums == [19] else 0.0


class NoReset:
    def add(self, a: int, b: int) -> int:
        """Add.

        Args:
            a: The first number.
            b: The second number.
        """
        return a + b
