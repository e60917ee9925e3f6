"""What a run optimises, when it is more than one student forward with a
label loss and a method loss (:func:`gnncompress.training.loop.fit`'s
``objective``): every width on every task (amalgamation), peers that learn
from each other (cotrain)."""
